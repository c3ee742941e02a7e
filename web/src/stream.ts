// The answer stream: OpenAI chat.completion.chunk objects over SSE (parsed by
// eventsource-parser), each naming the stored answer row; the first one says how the history
// was fitted to the model's context.
import { EventSourceParserStream } from "eventsource-parser/stream";

export interface ContextInfo {
  trimmed_turns: number;
  truncated: boolean;
  prompt_tokens: number;
}

export interface AnswerEvent {
  messageId?: string;
  content?: string;
  finish?: string;
  info?: ContextInfo;
}

/** An error event the server sent inside the stream (the model failed mid-answer). */
export class StreamError extends Error {}

/** One event per chunk, until [DONE] or the end of the body. */
export async function* answerEvents(body: ReadableStream<BufferSource>): AsyncGenerator<AnswerEvent> {
  const reader = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done || value.data === "[DONE]") return;
    const obj = JSON.parse(value.data);
    if (obj.error) throw new StreamError(obj.error.message);
    const choice = obj.choices?.[0];
    const ev: AnswerEvent = {};
    if (obj.message_id) ev.messageId = obj.message_id;
    if (obj.chatsmith) ev.info = obj.chatsmith as ContextInfo;
    if (choice?.delta?.content) ev.content = choice.delta.content as string;
    if (choice?.finish_reason) ev.finish = choice.finish_reason as string;
    yield ev;
  }
}

/** What the page says about a fitted history, or "" when all of it was read. */
export function contextNote(info: ContextInfo | undefined): string {
  if (!info) return "";
  if (info.truncated) return "Your message was too long for the model's context: older messages were left out, and only the end of your message was read.";
  if (info.trimmed_turns > 0) {
    const n = info.trimmed_turns;
    return `Older messages were left out to fit the model's context (${n} message${n === 1 ? "" : "s"}).`;
  }
  return "";
}
