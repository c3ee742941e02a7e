// What went wrong, in words a person can act on: never the browser's "Failed to fetch" or a
// validator's "messages.0.id: Field required". Pure, so it is unit-tested.
import { ApiError } from "./api";
import { StreamError } from "./stream";

export const UNREACHABLE = "Cannot reach the server. Check that it is running, then retry.";

/** `doing` names the action for messages that depend on it (e.g. "import"). */
export function humanError(e: unknown, doing = ""): string {
  if (typeof e === "string") return e;
  if (e instanceof StreamError) return "The model failed while answering. Retry, or try a shorter message.";
  if (!(e instanceof ApiError)) {
    return e instanceof TypeError ? UNREACHABLE : e instanceof Error ? e.message : String(e);
  }
  if (doing === "import" && (e.status === 400 || e.status === 413)) {
    return "Could not import this file: it is not a conversation exported from chatsmith.";
  }
  switch (e.status) {
    case 0:
      return UNREACHABLE;
    case 401:
      return "The server needs an API key: enter yours in Settings.";
    case 403:
      return "The server refused this request.";
    case 404:
      return "This conversation no longer exists on the server.";
    case 413:
      return "That is too large for the server to accept.";
    case 429:
      return "Too many requests at once. Wait a moment, then retry.";
    case 503:
      return "The model is loading or busy. Retry in a moment.";
  }
  if (e.status >= 500) return `The server had a problem (error ${e.status}). Retry in a moment.`;
  // A validator's field path ("messages.0.id: Field required") means nothing to a reader.
  if (/^[\w.[\]-]+: /.test(e.message) && /\d|\./.test(e.message.split(":")[0])) {
    return "The server could not read this request. Reload the page and try again.";
  }
  return `The server refused this: ${e.message}`;
}
