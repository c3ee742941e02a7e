// The server: the conversation store and its answers (/api), and the model list (/v1).
import { type AnswerEvent, answerEvents } from "./stream";
import type { Conv, Msg } from "./tree";

const KEY = "chatsmith.apiKey";

/** A request that failed: `status` is the HTTP status, or 0 when the server could not be reached. */
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
  // JSON on every request: the server refuses state changes in any other type (a cross-site form cannot send it).
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

async function request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  let r: Response;
  try {
    r = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(0, String(e)); // the browser's words ("Failed to fetch") say only that nothing answered
  }
  if (!r.ok) throw await failure(r);
  return r;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await (await request(method, path, body)).json()) as T;
}

export interface AnswerBody {
  parent_id: string;
  model?: string;
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
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

/** The server answers the stored user message `parent_id`, storing the answer as it streams. */
export async function* answer(convId: string, body: AnswerBody, signal: AbortSignal): AsyncGenerator<AnswerEvent> {
  const r = await request("POST", `/api/conversations/${convId}/answer`, body, signal);
  if (!r.body) throw new ApiError(0, "the answer came without a body");
  try {
    yield* answerEvents(r.body);
  } catch (e) {
    if (e instanceof TypeError) throw new ApiError(0, String(e)); // the connection broke mid-answer
    throw e;
  }
}
