import { describe, expect, it } from "vitest";
import { type AnswerEvent, answerEvents, contextNote, StreamError } from "./stream";

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

const chunk = (delta: object, extra: object = {}, finish: string | null = null) =>
  `data: ${JSON.stringify({ object: "chat.completion.chunk", message_id: "m1", ...extra, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;

async function all(s: AsyncGenerator<AnswerEvent>): Promise<AnswerEvent[]> {
  const out: AnswerEvent[] = [];
  for await (const x of s) out.push(x);
  return out;
}

const info = { trimmed_turns: 2, truncated: false, prompt_tokens: 300 };

describe("answer stream parsing", () => {
  it("reads the row id, the context info, the text and the finish reason, whatever the network splits", async () => {
    const text =
      chunk({ role: "assistant", content: "" }, { chatsmith: info }) +
      chunk({ content: "你好" }) +
      chunk({ content: " world" }) +
      chunk({}, {}, "length") +
      "data: [DONE]\n\n" +
      chunk({ content: "after" });
    const whole = await all(answerEvents(body([text])));
    expect(whole).toEqual([
      { messageId: "m1", info },
      { messageId: "m1", content: "你好" },
      { messageId: "m1", content: " world" },
      { messageId: "m1", finish: "length" },
    ]);
    for (const step of [1, 5, 7]) expect(await all(answerEvents(body([text], step)))).toEqual(whole);
  });
  it("raises the error event the server sends mid-stream", async () => {
    const err = `data: ${JSON.stringify({ error: { message: "generation failed: boom", type: "server_error" } })}\n\n`;
    await expect(all(answerEvents(body([chunk({ content: "a" }), err])))).rejects.toThrow(StreamError);
  });
  it("ends quietly when the stream closes without [DONE] (the caller sees no finish reason)", async () => {
    const evs = await all(answerEvents(body([chunk({ content: "partial" })])));
    expect(evs.map((e) => e.finish)).toEqual([undefined]);
  });
});

describe("context note", () => {
  it("says when older messages were left out, and nothing when all fit", () => {
    expect(contextNote(info)).toContain("Older messages were left out to fit the model's context (2 messages)");
    expect(contextNote({ ...info, trimmed_turns: 0, truncated: true })).toContain("left out");
    expect(contextNote({ ...info, trimmed_turns: 0 })).toBe("");
    expect(contextNote(undefined)).toBe("");
  });
});
