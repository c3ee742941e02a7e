"""The OpenAI endpoints that generate: /v1/chat/completions and /v1/completions.

The event loop only queues requests and awaits their events. A client that goes away
cancels its generation: a streaming response's generator is cancelled by Starlette, a
plain one has a watcher on the connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from chatsmith.common.errors import ChatsmithError
from chatsmith.serve.backend import EngineFull, Event, PromptTooLong, Request
from chatsmith.serve.context import LimitedWho, ServerContext, ctx_of
from chatsmith.serve.convert import Prepared, prepare_chat, prepare_completions, too_long
from chatsmith.serve.errors import APIError, bad_request
from chatsmith.serve.metrics import Timing
from chatsmith.serve.openapi import doc
from chatsmith.serve.protocol import MAX_MESSAGES, ChatRequest, CompletionRequest
from chatsmith.serve.response_models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    StreamError,
    ToolCallDelta,
    Usage,
)
from chatsmith.serve.responses import (
    Choice,
    ChoiceTracker,
    chat_response,
    completion_choice,
    logprob_entry,
    new_id,
    now,
    sse,
)

router = APIRouter()
JSON_OR_SSE = "The answer: JSON, or with `stream: true` an SSE stream of chunks"
M = TypeVar("M", bound=BaseModel)


async def read_body(request: HTTPRequest, model: type[M]) -> M:
    """The JSON body as `model`, parsed and checked on a worker thread (a large body is CPU
    work the event loop must not do); any fault is a 400 naming the field."""
    return await run_in_threadpool(parse_body, await request.body(), model)


def parse_body(raw: bytes, model: type[M]) -> M:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON ({e})") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    msgs = body.get("messages")
    if isinstance(msgs, list) and len(msgs) > MAX_MESSAGES:  # before the costly checks below
        raise bad_request(f"messages: at most {MAX_MESSAGES} messages, got {len(msgs)}", param="messages")
    where = lone_surrogate(body)
    if where is not None:
        msg = f"{where}: the text holds a lone UTF-16 surrogate, which is not Unicode"
        raise bad_request(msg, param=where)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        raise bad_request(
            f"{loc}: {err.get('msg', 'invalid value')}" if loc else err["msg"], param=loc or None
        ) from None


def lone_surrogate(obj: Any) -> str | None:
    """The dotted path of the first string (or key) in parsed JSON that cannot be UTF-8."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, x = stack.pop()
        if isinstance(x, str):
            if not x.isascii() and _bad_utf8(x):
                return path or "body"
        elif isinstance(x, dict):
            for k, v in reversed(list(x.items())):
                sub = f"{path}.{k}" if path else str(k)
                if not k.isascii() and _bad_utf8(k):
                    return sub
                stack.append((sub, v))
        elif isinstance(x, list):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in reversed(list(enumerate(x))))
    return None


def _bad_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def submit(ctx: ServerContext, prep: Prepared) -> Request:
    try:
        return ctx.backend.submit(prep.prompt, prep.params, prep.run_tools)
    except PromptTooLong as e:
        raise too_long(e.prompt_tokens, e.limit) from None
    except EngineFull as e:
        raise APIError(
            503, f"the server is overloaded: {e}", code="overloaded", headers={"Retry-After": "1"}
        ) from None
    except ChatsmithError as e:
        raise bad_request(str(e)) from None


async def _watch_disconnect(request: HTTPRequest, reqs: list[Request]) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            for r in reqs:
                r.cancel()
            return


async def merged(reqs: list[Request]) -> AsyncIterator[tuple[int, Event]]:
    """Events of several requests as they come: (which request, event)."""
    if len(reqs) == 1:
        async for ev in reqs[0].aevents():
            yield 0, ev
        return
    q: asyncio.Queue[tuple[int, Event] | None] = asyncio.Queue()

    async def pump(i: int, r: Request) -> None:
        async for ev in r.aevents():
            await q.put((i, ev))
        await q.put(None)

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
    try:
        left = len(reqs)
        while left:
            item = await q.get()
            if item is None:
                left -= 1
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()


def _observe(timing: Timing, ev: Event) -> None:
    if ev.kind == "token" and ev.token >= 0:
        timing.token(time.perf_counter())


def _count_cut(timing: Timing, trackers: list[ChoiceTracker], prompt_tokens: int) -> None:
    """The tokens of a stream that ended early (the client left) count too."""
    made = sum(len(c.token_events) for t in trackers for c in t.choices)
    timing.done(time.perf_counter(), prompt_tokens, made)


def _engine_failed(choices: list[Choice]) -> None:
    for c in choices:
        if c.error:
            raise APIError(500, f"generation failed: {c.error}", code="engine_error")


async def _collect(
    request: HTTPRequest, reqs: list[Request], trackers: list[ChoiceTracker], timing: Timing
) -> None:
    """Feed every event of a plain (not streamed) response; a client that leaves cancels it."""
    watcher = asyncio.create_task(_watch_disconnect(request, reqs))
    try:
        async for i, ev in merged(reqs):
            _observe(timing, ev)
            trackers[i].feed(ev)
    finally:
        watcher.cancel()
        for r in reqs:
            r.cancel()  # a no-op once finished; frees the slot if we were interrupted


def _event_stream(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@dataclass
class _Head:
    """The fields every object of one response shares."""

    id: str
    created: int
    model: str

    def chat_chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        return sse(ChatCompletionChunk(**vars(self), choices=choices, usage=usage))

    def completion(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(**vars(self), choices=choices, usage=usage)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    **doc(ChatRequest, 401, 404, 429, 500, 503, stream=JSON_OR_SSE),
)
async def chat_completions(request: HTTPRequest, _who: LimitedWho) -> Any:
    ctx = ctx_of(request)
    req = await read_body(request, ChatRequest)
    ctx.ensure_ready()
    prep = await run_in_threadpool(prepare_chat, req, ctx.backend)  # templating and tokenizing
    timing = Timing(ctx.metrics, time.perf_counter())
    r = submit(ctx, prep)
    head = _Head(new_id("chatcmpl"), now(), ctx.backend.name)
    tr = ChoiceTracker(ctx.backend.tok, prep.params.n, req.logprobs, prep.forced_tool)
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return _event_stream(_stream_chat(r, tr, timing, head, prep, usage))
    await _collect(request, [r], [tr], timing)
    _engine_failed(tr.choices)
    u = tr.usage()
    timing.done(time.perf_counter(), u.prompt_tokens, u.completion_tokens)
    return JSONResponse(chat_response(head.id, head.model, head.created, tr, prep.primed).model_dump())


async def _stream_chat(
    r: Request, tr: ChoiceTracker, timing: Timing, head: _Head, prep: Prepared, usage: bool
) -> AsyncIterator[str]:
    try:
        for i in range(prep.params.n):
            delta = ChatDelta(role="assistant", content=prep.primed)
            yield head.chat_chunk([ChunkChoice(index=i, delta=delta)])
        async for _, ev in merged([r]):
            _observe(timing, ev)
            c = tr.feed(ev)
            for out in _chat_deltas(tr, ev, c):
                yield sse(out) if isinstance(out, StreamError) else head.chat_chunk([out])
        u = tr.usage()
        timing.done(time.perf_counter(), u.prompt_tokens, u.completion_tokens)
        if usage:
            yield head.chat_chunk([], usage=u)
        yield sse("[DONE]")
    finally:
        r.cancel()  # the client went away (or we finished): free the engine's slot
        _count_cut(timing, [tr], len(prep.prompt))


def _chat_deltas(tr: ChoiceTracker, ev: Event, c: Choice) -> Iterator[ChunkChoice | StreamError]:
    """The stream chunks one engine event makes: text as it comes (none for a primed tool
    call, whose arguments come whole at the end), then the tool calls and the finish reason."""
    if ev.kind == "token":
        if tr.forced is None and (ev.text or (tr.want_lp and ev.token >= 0)):
            lp = ChoiceLogprobs(content=[logprob_entry(tr.tok, ev)]) if tr.want_lp and ev.token >= 0 else None
            yield ChunkChoice(index=c.index, delta=ChatDelta(content=ev.text), logprobs=lp)
        return
    if ev.kind != "done":
        return
    if c.error:
        info = StreamError.Info(message=f"generation failed: {c.error}", type="server_error")
        yield StreamError(error=info)
        return
    if ev.text and tr.forced is None:
        yield ChunkChoice(index=c.index, delta=ChatDelta(content=ev.text))
    if c.tool_calls:
        calls = [ToolCallDelta(index=k, **tc.model_dump()) for k, tc in enumerate(c.tool_calls)]
        yield ChunkChoice(index=c.index, delta=ChatDelta(tool_calls=calls))
    yield ChunkChoice(index=c.index, delta=ChatDelta(), finish_reason=c.finish_reason)


def _submit_all(ctx: ServerContext, preps: list[Prepared]) -> list[Request]:
    """Submit every prompt, or none: a refusal cancels the ones already queued."""
    reqs: list[Request] = []
    try:
        for p in preps:
            reqs.append(submit(ctx, p))
    except APIError:
        for r in reqs:
            r.cancel()
        raise
    return reqs


@router.post(
    "/v1/completions",
    response_model=Completion,
    **doc(CompletionRequest, 401, 404, 429, 500, 503, stream=JSON_OR_SSE),
)
async def completions(request: HTTPRequest, _who: LimitedWho) -> Any:
    ctx = ctx_of(request)
    req = await read_body(request, CompletionRequest)
    ctx.ensure_ready()
    if req.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    preps = await run_in_threadpool(prepare_completions, req, ctx.backend)
    timing = Timing(ctx.metrics, time.perf_counter())
    reqs = _submit_all(ctx, preps)
    tok = ctx.backend.tok
    n, want_lp = req.n, req.logprobs is not None
    trackers = [ChoiceTracker(tok, n, want_lp, None) for _ in reqs]
    head = _Head(new_id("cmpl"), now(), ctx.backend.name)
    if req.stream:
        return _event_stream(_stream_completions(req, preps, reqs, trackers, timing, head))
    await _collect(request, reqs, trackers, timing)
    choices = []
    for i, (p, tr) in enumerate(zip(preps, trackers)):
        _engine_failed(tr.choices)
        for c in tr.choices:
            choices.append(
                completion_choice(tok, i * n + c.index, c, p.prompt, p.prompt_text, req.echo, want_lp)
            )
    usage = _sum_usage(trackers)
    timing.done(time.perf_counter(), usage.prompt_tokens, usage.completion_tokens)
    return JSONResponse(head.completion(choices, usage).model_dump())


def _sum_usage(trackers: list[ChoiceTracker]) -> Usage:
    total = Usage.of(0, 0)
    for t in trackers:
        total = total + t.usage()
    return total


async def _stream_completions(
    req: CompletionRequest,
    preps: list[Prepared],
    reqs: list[Request],
    trackers: list[ChoiceTracker],
    timing: Timing,
    head: _Head,
) -> AsyncIterator[str]:
    n = req.n

    def chunk(idx: int, text: str, finish: str | None = None) -> str:
        return sse(head.completion([CompletionChoice(index=idx, text=text, finish_reason=finish)]))

    try:
        if req.echo:
            for i, p in enumerate(preps):
                for k in range(n):
                    yield chunk(i * n + k, p.prompt_text)
        async for i, ev in merged(reqs):
            _observe(timing, ev)
            c = trackers[i].feed(ev)
            idx = i * n + c.index
            if ev.kind == "token" and ev.text:
                yield chunk(idx, ev.text)
            elif ev.kind == "done":
                yield chunk(idx, ev.text, c.finish_reason)
        usage = _sum_usage(trackers)
        timing.done(time.perf_counter(), usage.prompt_tokens, usage.completion_tokens)
        if req.stream_options and req.stream_options.include_usage:
            yield sse(head.completion([], usage))
        yield sse("[DONE]")
    finally:
        for r in reqs:
            r.cancel()
        _count_cut(timing, trackers, sum(len(p.prompt) for p in preps))
