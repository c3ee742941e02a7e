"""What the engine tracks per request and per choice, and what it reports back."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.sampling import SamplingParams, SeqSampler
from chatsmith.engine.text import TurnText


class EngineFull(ChatsmithError):
    """The waiting queue is full: try again later (HTTP 503/429 upstream)."""


class PromptTooLong(ChatsmithError):
    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens; this model's context holds {limit} "
            f"(prompt plus at least one generated token)"
        )
        self.prompt_tokens, self.limit = prompt_tokens, limit


@dataclass(slots=True)
class Event:
    """One thing that happened to one choice of a request."""

    kind: str  # "token" | "tool_call" | "tool_result" | "done"
    index: int = 0  # which choice (0..n-1)
    token: int = -1
    text: str = ""  # visible text released by this event (may be "")
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.perf_counter)  # when it happened (for latency figures)


@dataclass
class Completion:
    index: int
    token_ids: list[int]
    text: str  # all visible text the model wrote (tool-call blocks and special tokens left out)
    final_text: str  # the visible text after the last built-in tool result: the answer
    finish_reason: str  # "stop" | "length" | "tool_calls" | "cancelled"
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_errors: list[str] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)  # what built-in tools answered, in order
    prompt_logprobs: list[float | None] | None = None
    prompt_tokens: int = 0


_ids = itertools.count()


class Request:
    """A submitted prompt: read its events (blocking or async), cancel it, or wait for it."""

    def __init__(self, prompt: list[int], params: SamplingParams, run_tools: bool) -> None:
        self.id = f"req-{next(_ids)}"
        self.prompt, self.params, self.run_tools = prompt, params, run_tools
        self.completions: list[Completion | None] = [None] * params.n
        self.cancelled = threading.Event()
        self._events: deque[Event] = deque()
        self._cond = threading.Condition()
        self._done = 0
        self._readers = 0  # threads blocked in events(): only then is a notify needed
        self._async: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    # -- the engine's side (scheduler thread) --------------------------------------------
    def push(self, ev: Event) -> None:
        """Queue one event and wake the reader."""
        self.push_many([ev])

    def push_many(self, evs: list[Event]) -> None:
        """Queue several events and wake the reader once (the scheduler's end of a step):
        one lock round for the step's events instead of one per token."""
        with self._cond:
            self._events.extend(evs)
            for ev in evs:
                if ev.kind == "done":
                    self._done += 1
            if self._readers:
                self._cond.notify_all()
            waiter = self._async
        if waiter is not None:
            waiter[0].call_soon_threadsafe(waiter[1].set)

    @property
    def finished(self) -> bool:
        return self._done >= self.params.n

    # -- the caller's side ---------------------------------------------------------------
    def pop_events(self) -> list[Event]:
        """Whatever events arrived so far (never blocks)."""
        with self._cond:
            out = list(self._events)
            self._events.clear()
        return out

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event until each choice is done (blocking, any thread)."""
        seen_done = 0
        while seen_done < self.params.n:
            with self._cond:
                if not self._events:
                    self._readers += 1
                    try:
                        arrived = self._cond.wait_for(lambda: bool(self._events), timeout)
                    finally:
                        self._readers -= 1
                    if not arrived:
                        raise TimeoutError(f"{self.id}: no event within {timeout} s")
                ev = self._events.popleft()
            seen_done += ev.kind == "done"
            yield ev

    async def aevents(self) -> AsyncIterator[Event]:
        """The same events for asyncio code (the HTTP server)."""
        flag = asyncio.Event()
        with self._cond:
            self._async = (asyncio.get_running_loop(), flag)
        seen_done = 0
        while seen_done < self.params.n:
            flag.clear()
            with self._cond:
                batch = list(self._events)
                self._events.clear()
            if not batch:
                await flag.wait()
                continue
            for ev in batch:
                seen_done += ev.kind == "done"
                yield ev

    def cancel(self) -> None:
        """Stop generating (any thread, any time); the cache is freed at the next step."""
        self.cancelled.set()

    def result(self, timeout: float | None = None) -> list[Completion]:
        for _ in self.events(timeout):
            pass
        return [c for c in self.completions if c is not None]


@dataclass
class Seq:
    """One choice of a request as the scheduler runs it."""

    req: Request
    index: int
    sampler: SeqSampler
    text: TurnText
    slot: int = -1
    todo: list[int] = field(default_factory=list)  # tokens to feed before the next sample
    fed: int = 0  # prompt tokens already in the cache (prefill progress)
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    calls: list[Any] = field(default_factory=list)  # this turn's parsed tool calls (or error strings)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_errors: list[str] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None
    rounds: int = 0
    generated: int = 0
    extra: list[int] = field(default_factory=list)  # tokens fed after the prompt, in order
    order: int = 0  # admission order: the newest running sequence is preempted first
    resumed: bool = False  # preempted, its context to be computed again before it samples

    def completion(self, reason: str) -> Completion:
        return Completion(
            index=self.index,
            token_ids=list(self.out),
            text=self.text.text,
            final_text=self.text.final_text,
            finish_reason=reason,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            tool_calls=self.tool_calls,
            tool_errors=self.tool_errors,
            tool_results=self.tool_results,
            prompt_logprobs=self.prompt_logprobs,
            prompt_tokens=len(self.req.prompt),
        )
