"""POST /api/conversations/{id}/answer: the server answers a stored user message and stores
the answer as it streams, so what a person read survives a closed page or a dead server.

The assistant row exists (status "streaming") before the first token; its text is written
at most every FLUSH_SECONDS and at the end, when the status becomes "done", "length"
(max_tokens or the context) or "stopped" (the client left). A server that starts turns
rows still "streaming" into "cut" (Store.cut_streaming). Answering the same parent again
makes a sibling branch, as regenerate does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool

from chatsmith.common.errors import ChatsmithError
from chatsmith.serve.backend import Request
from chatsmith.serve.context import LimitedWho, ServerContext, ctx_of
from chatsmith.serve.convert import Prepared, prepare_chat
from chatsmith.serve.errors import APIError, bad_request
from chatsmith.serve.history import Fitted, as_chat, fit, reserve
from chatsmith.serve.metrics import Timing
from chatsmith.serve.openai_routes import _chat_deltas, _event_stream, _observe, merged, read_body, submit
from chatsmith.serve.openapi import doc
from chatsmith.serve.protocol import ChatMessage, ChatRequest, _Body
from chatsmith.serve.response_models import (
    ChatCompletionChunk,
    ChatDelta,
    ChunkChoice,
    ResponseModel,
    StreamError,
)
from chatsmith.serve.responses import ChoiceTracker, new_id, now, sse
from chatsmith.serve.store import Store

router = APIRouter(prefix="/api")
FLUSH_SECONDS = 0.5
SAMPLING = ("temperature", "top_p", "max_tokens", "seed")


class AnswerRequest(_Body):
    parent_id: str = Field(min_length=1, max_length=64)
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None


class AnswerInfo(ResponseModel):
    trimmed_turns: int  # messages of the branch left out to fit the context, oldest first
    truncated: bool  # the start of the user message was cut to fit
    prompt_tokens: int


class AnswerChunk(ChatCompletionChunk):
    """A chat.completion.chunk that names the stored row; the first one also says how the
    history was fitted."""

    _omit_none = frozenset({"usage", "chatsmith"})
    message_id: str
    chatsmith: AnswerInfo | None = None


def _sampling(settings: dict[str, Any], body: AnswerRequest) -> ChatRequest:
    """The request's sampling fields over the conversation's stored ones, type-checked."""
    picked = {k: settings[k] for k in SAMPLING if settings.get(k) is not None}
    picked.update(body.model_dump(include=set(SAMPLING), exclude_none=True))
    try:
        return ChatRequest.model_validate({"messages": [{"role": "user"}], "model": body.model, **picked})
    except ValidationError as e:
        loc = ".".join(str(x) for x in e.errors()[0].get("loc", ()))
        msg = f"the conversation's settings: {loc}: {e.errors()[0].get('msg')}"
        raise bad_request(msg, param=f"settings.{loc}") from None


def _prepare(ctx: ServerContext, user_id: str, conv_id: str, body: AnswerRequest) -> tuple[Prepared, Fitted]:
    """Read the branch, fit it to the context and encode it (on a worker thread)."""
    conv, path = ctx.store.branch(user_id, conv_id, body.parent_id)
    if path[-1].role != "user":
        raise bad_request("parent_id must name a user message", param="parent_id")
    settings = conv.settings if isinstance(conv.settings, dict) else {}
    req = _sampling(settings, body)
    system = settings.get("system") if isinstance(settings.get("system"), str) else ""
    b = ctx.backend
    budget = b.context_length - reserve(b.context_length, req.max_tokens)
    fitted = fit(b.tok, system, [as_chat(m) for m in path], budget)
    req.messages = [ChatMessage.model_validate(m) for m in fitted.messages]
    return prepare_chat(req, b), fitted


class _Row:
    """The stored assistant message of one streamed answer."""

    def __init__(self, store: Store, msg_id: str) -> None:
        self.store, self.id, self.status = store, msg_id, "stopped"
        self.flushed = 0.0  # the first text is written at once, then every FLUSH_SECONDS

    async def flush(self, text: str) -> None:
        if text and time.monotonic() - self.flushed >= FLUSH_SECONDS:
            self.flushed = time.monotonic()
            await run_in_threadpool(self.store.update_answer, self.id, text, "streaming")

    async def finish(self, text: str, tool_calls: list[dict[str, Any]] | None) -> None:
        # Shielded: this also runs when the stream was cancelled (the client left).
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.store.update_answer, self.id, text, self.status, tool_calls)


@router.post(
    "/conversations/{conv_id}/answer",
    response_class=StreamingResponse,
    **doc(AnswerRequest, 401, 404, 429, 503, stream="The answer: an SSE stream of chat.completion.chunk"),
)
async def answer(request: HTTPRequest, conv_id: str, who: LimitedWho) -> Any:
    ctx = ctx_of(request)
    body = await read_body(request, AnswerRequest)
    ctx.ensure_ready()
    try:
        prep, fitted = await run_in_threadpool(_prepare, ctx, who.user_id, conv_id, body)
    except KeyError:
        raise APIError(404, "no such conversation", code="conversation_not_found") from None
    except ChatsmithError as e:
        raise bad_request(str(e), param="parent_id") from None
    timing = Timing(ctx.metrics, time.perf_counter())
    r = submit(ctx, prep)
    try:
        msg = await run_in_threadpool(
            ctx.store.add_message, who.user_id, conv_id, "assistant", "", body.parent_id, status="streaming"
        )
    except (KeyError, ChatsmithError):
        r.cancel()
        raise APIError(404, "no such conversation", code="conversation_not_found") from None
    info = AnswerInfo(
        trimmed_turns=fitted.trimmed, truncated=fitted.truncated, prompt_tokens=len(prep.prompt)
    )
    tr = ChoiceTracker(ctx.backend.tok, 1, False, None)
    head = {"id": new_id("chatcmpl"), "created": now(), "model": ctx.backend.name, "message_id": msg.id}
    return _event_stream(_stream(r, tr, timing, head, _Row(ctx.store, msg.id), info))


async def _stream(
    r: Request, tr: ChoiceTracker, timing: Timing, head: dict[str, Any], row: _Row, info: AnswerInfo
) -> AsyncIterator[str]:
    c = tr.choices[0]
    try:
        first = ChunkChoice(index=0, delta=ChatDelta(role="assistant", content=""))
        yield sse(AnswerChunk(**head, choices=[first], chatsmith=info))
        async for _, ev in merged([r]):
            _observe(timing, ev)
            c = tr.feed(ev)
            if ev.kind == "done":
                row.status = "cut" if c.error else "length" if c.finish_reason == "length" else "done"
            for out in _chat_deltas(tr, ev, c):
                yield sse(out) if isinstance(out, StreamError) else sse(AnswerChunk(**head, choices=[out]))
            await row.flush(c.content())
        u = tr.usage()
        timing.done(time.perf_counter(), u.prompt_tokens, u.completion_tokens)
        yield sse("[DONE]")
    finally:
        r.cancel()  # the client went away (or we finished): free the engine's slot
        timing.done(time.perf_counter(), info.prompt_tokens, len(c.token_events))  # once: a no-op if done
        await row.finish(c.content(), [tc.model_dump() for tc in c.tool_calls] or None)
