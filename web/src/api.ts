// The server: the conversation store (/api) and OpenAI-style streaming chat (/v1).
import { EventSourceParserStream } from "eventsource-parser/stream";
import type { Conv, Msg } from "./tree";

const KEY = "chatsmith.apiKey";

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

export function apiKey(): string {
  return localStorage.getItem(KEY) ?? "";
}

export function setApiKey(k: string): void {
  localStorage.setItem(KEY, k.trim());
}

function headers(): Record<string, string> {
  const h: Record<string, string> = { "Content-Type": "application/json" };
  if (apiKey()) h.Authorization = `Bearer ${apiKey()}`;
  return h;
}

async function failure(r: Response): Promise<ApiError> {
  let msg = `${r.status} ${r.statusText}`;
  try {
    msg = (await r.json()).error?.message ?? msg;
  } catch {
    /* not JSON */
  }
  return new ApiError(r.status, msg);
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) throw await failure(r);
  return (await r.json()) as T;
}

export const api = {
  models: () => call<{ data: { id: string }[] }>("GET", "/v1/models"),
  list: (q = "") => call<{ data: Conv[] }>("GET", `/api/conversations?q=${encodeURIComponent(q)}`),
  create: (title: string, settings: Record<string, unknown>) =>
    call<Conv>("POST", "/api/conversations", { title, settings }),
  get: (id: string) => call<Conv>("GET", `/api/conversations/${id}`),
  patch: (id: string, fields: Partial<Pick<Conv, "title" | "current_leaf" | "settings">>) =>
    call<Conv>("PATCH", `/api/conversations/${id}`, fields),
  remove: (id: string) => call<unknown>("DELETE", `/api/conversations/${id}`),
  addMessage: (id: string, m: { role: string; content: string; parent_id: string | null }) =>
    call<Msg>("POST", `/api/conversations/${id}/messages`, m),
  import: (data: unknown) => call<Conv>("POST", "/api/conversations/import", data),
};

export interface ChatBody {
  model: string;
  messages: { role: string; content: string }[];
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
}

/** Yield the text of each content delta of a streamed chat completion. */
export async function* streamChat(body: ChatBody, signal: AbortSignal): AsyncGenerator<string> {
  const r = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!r.ok || !r.body) throw await failure(r);
  yield* contentDeltas(r.body);
}

/** The content deltas of an OpenAI chat stream (SSE framing parsed by eventsource-parser). */
export async function* contentDeltas(body: ReadableStream<BufferSource>): AsyncGenerator<string> {
  const reader = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done || value.data === "[DONE]") return;
    const obj = JSON.parse(value.data);
    if (obj.error) throw new ApiError(500, obj.error.message);
    const delta = obj.choices?.[0]?.delta;
    if (delta?.content) yield delta.content as string;
  }
}
