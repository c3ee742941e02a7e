import { describe, expect, it } from "vitest";
import { ApiError, contentDeltas } from "./api";

// The server's framing: `data: {json}\n\n` per chunk, then `data: [DONE]\n\n`.
// `step` splits the bytes as a network might, through lines and UTF-8 sequences alike.
function body(pieces: string[], step = 0): ReadableStream<Uint8Array<ArrayBuffer>> {
  const bytes = new TextEncoder().encode(pieces.join(""));
  const size = step || bytes.length;
  return new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += size) c.enqueue(bytes.slice(i, i + size));
      c.close();
    },
  });
}

const chunk = (delta: object) => `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [{ index: 0, delta }] })}\n\n`;

async function all(s: AsyncGenerator<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const x of s) out.push(x);
  return out;
}

describe("chat stream parsing", () => {
  it("yields content deltas and stops at [DONE], whatever the network splits", async () => {
    const text = chunk({ role: "assistant", content: "" }) + chunk({ content: "你好" }) + chunk({ content: " world" }) + chunk({}) + "data: [DONE]\n\n" + chunk({ content: "after" });
    const whole = await all(contentDeltas(body([text])));
    expect(whole).toEqual(["你好", " world"]);
    for (const step of [1, 5, 7]) expect(await all(contentDeltas(body([text], step)))).toEqual(whole);
  });
  it("raises the error event the server sends mid-stream", async () => {
    const err = `data: ${JSON.stringify({ error: { message: "generation failed: boom", type: "server_error" } })}\n\n`;
    await expect(all(contentDeltas(body([chunk({ content: "a" }), err])))).rejects.toThrow(ApiError);
  });
  it("ends quietly when the stream closes without [DONE]", async () => {
    expect(await all(contentDeltas(body([chunk({ content: "partial" })])))).toEqual(["partial"]);
  });
});
