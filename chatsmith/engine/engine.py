"""The engine: one scheduler per model, run on its own thread, shared by every caller.

Callers (the HTTP server, scripts) `submit` prompt ids with sampling parameters and read
token events from the returned `Request`, blocking or with asyncio; they never touch the
model.

Keep the model's work on this one thread. Each thread that runs a multi-threaded torch
op keeps its own OpenMP team alive; once there are more team threads than cores, OpenMP
stops spinning between parallel regions and every op waits for a sleeping thread to
wake. On a 2-core VM that made decoding 3x slower while the caller's thread (which had
loaded the model) merely waited; `bench generate` therefore loads and runs the engine
from threads that end, and the server loads on one. Admission control is explicit: a prompt
that can never fit is refused at once (`PromptTooLong`), a request needing more cache
slots than exist is refused, and when the waiting queue is full `submit` raises
`EngineFull` instead of letting memory grow.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import torch

from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info, warn
from chatsmith.engine.memory import plan_kv
from chatsmith.engine.runner import cache_dtype
from chatsmith.engine.sampling import SamplingParams
from chatsmith.engine.scheduler import Scheduler
from chatsmith.engine.sequence import Completion, EngineFull, Event, PromptTooLong, Request
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer

__all__ = ["Completion", "Engine", "EngineFull", "Event", "PromptTooLong", "Request"]


class Engine:
    def __init__(
        self,
        model: GPT,
        tok: BPETokenizer,
        *,
        dtype: torch.dtype | None = None,
        max_batch: int = 32,
        kv_budget: int | str | None = None,
        max_context: int | None = None,
        prefill_chunk: int = 256,
        max_waiting: int = 256,
        prefix_slots: int = 4,
        compile: bool = False,
    ) -> None:
        """kv_budget: the most KV cache held, in tokens (int, or text such as "64k") or bytes
        ("1.5GB"); default: a quarter of the memory available, at most 8 GiB (engine/memory.py).
        max_context: the longest sequence (default: the model's, or the budget if smaller).
        max_batch: the most sequences decoded at once. dtype: the weights' dtype for generation
        (default: keep the model's); the model is converted in place, so pass a copy to keep
        training the original. compile: decode through one compiled graph with the weights
        frozen into it (engine/decode.py), faster per step, for a model that no longer
        changes (serving, benchmarks), not for RL rollouts between weight updates."""
        if dtype is not None and dtype != model.embed_tokens.weight.dtype:
            model = model.to(dtype)
        model.eval()
        self._born = time.perf_counter()
        self.model, self.tok = model, tok
        if max_batch < 1:
            raise ChatsmithError(f"max_batch must be >= 1, got {max_batch}")
        device = model.embed_tokens.weight.device
        self.kv_plan = plan_kv(model, cache_dtype(model, None, compile), kv_budget, max_context, device)
        self.context_length = self.kv_plan.context
        if self.context_length > model.rope_cos.size(0):
            raise ChatsmithError(
                f"context_length {self.context_length} exceeds the model's position table "
                f"({model.rope_cos.size(0)})"
            )
        self.sched = Scheduler(
            model,
            tok,
            max_batch,
            self.context_length,
            prefill_chunk,
            prefix_slots,
            compile=compile,
            budget=self.kv_plan.budget_tokens,
        )
        self.max_waiting = max_waiting
        self._inbox: list[Request] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._drain = True
        self.steps = 0
        self.error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Engine:
        """Start the scheduler thread; returns once it runs (after compiling the decode
        step there, when asked to)."""
        if self._thread is None:
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="chatsmith-engine", daemon=True
            )
            self._thread.start()
            ready.wait()
            took = time.perf_counter() - self._born
            how = "compiled" if self.sched.runner.decoder is not None else "eager"
            info(f"engine ready in {took:.1f} s ({how}; {self.kv_plan.describe()})")
        return self

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the scheduler thread: after the running and waiting requests finish
        (drain) or after cancelling them."""
        with self._lock:
            self._stop, self._drain = True, drain
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(drain=False)

    # -- requests ------------------------------------------------------------------------
    def submit(self, prompt: list[int], params: SamplingParams, run_tools: bool = True) -> Request:
        """Queue a request; its events arrive as the scheduler produces them."""
        if self._thread is None:
            raise ChatsmithError("the engine is not running: call start() first")
        params.validate(self.model.cfg.vocab_size)
        if not prompt:
            raise ChatsmithError("the prompt is empty")
        if any(not 0 <= t < self.model.cfg.vocab_size for t in prompt):
            raise ChatsmithError(f"prompt token ids must be in [0, {self.model.cfg.vocab_size})")
        room = 0 if params.max_new_tokens == 0 else 1
        if len(prompt) + room > self.context_length:
            raise PromptTooLong(len(prompt), self.context_length)
        if params.n > self.sched.n_slots:
            raise ChatsmithError(
                f"n={params.n} needs {params.n} cache slots at once; this engine has {self.sched.n_slots}"
            )
        if params.n * (len(prompt) + room) > self.sched.budget:
            raise ChatsmithError(
                f"n={params.n} choices of a {len(prompt)}-token prompt need more than the KV budget "
                f"of {self.sched.budget} tokens"
            )
        req = Request(list(prompt), params, run_tools)
        with self._lock:
            if self._stop:
                raise EngineFull("the engine is shutting down")
            if len(self._inbox) + len(self.sched.waiting) >= self.max_waiting:
                raise EngineFull(f"{self.max_waiting} requests are already waiting; try again shortly")
            self._inbox.append(req)
            self._lock.notify_all()
        return req

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, run_tools: bool = True
    ) -> list[list[Completion]]:
        """Submit all prompts at once and wait: one list of n completions per prompt."""
        reqs, out = [], []
        for p in prompts:
            while True:
                try:
                    reqs.append(self.submit(p, params, run_tools))
                    break
                except EngineFull:
                    if self._stop:
                        raise
                    time.sleep(0.01)  # the queue drains as requests finish
        for r in reqs:
            out.append(r.result())
        return out

    def stats(self) -> dict[str, Any]:
        s = self.sched
        return {
            "running": len(s.live),
            "waiting": len(s.waiting) + len(self._inbox) + len(s.resumed),
            "slots": s.n_slots,
            "context_length": self.context_length,
            "kv_used": s.cache.held(),
            "kv_total": s.budget,
            "kv_bytes": s.cache.held() * s.cache.token_bytes(),
            "kv_budget_bytes": s.budget * s.cache.token_bytes(),
            "preemptions": s.preemptions,
            "steps": self.steps,
            "prefix_hits": s.kv.prefix_hits,
            "prefix_tokens_reused": s.kv.prefix_tokens_reused,
        }

    # -- the scheduler thread ------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        torch.set_grad_enabled(False)
        try:
            self.sched.warm_up()  # here, so that the model's work stays on this one thread
        finally:
            ready.set()
        while True:
            with self._lock:
                while not self._inbox and not self.sched.busy and not self._stop:
                    self._lock.wait()
                for r in self._inbox:
                    self.sched.add(r)
                self._inbox.clear()
                stop, drain = self._stop, self._drain
            if stop and not drain:
                for s in list(self.sched.live):
                    s.req.cancel()
                for r in self.sched.waiting:
                    r.cancel()
            if stop and not self.sched.busy:
                return
            try:
                self.sched.step()
                self.steps += 1
            except Exception as e:  # a bug must not leave callers waiting forever
                self.error = f"{type(e).__name__}: {e}"
                warn(f"engine step failed: {self.error}\n{traceback.format_exc()}")
                self._fail_all()

    def _fail_all(self) -> None:
        s = self.sched
        reqs = {id(q.req): q.req for q in (*s.live, *s.resumed)} | {id(r): r for r in s.waiting}
        s.live.clear()
        s.waiting.clear()
        s.resumed.clear()
        s.prefilling = None
        for i in range(s.cache.n_slots):
            s.cache.free(i)
        for r in reqs.values():
            for i in range(r.params.n):
                if r.completions[i] is None:
                    data = {"finish_reason": "error", "error": self.error, "prompt_tokens": len(r.prompt)}
                    r.push(Event("done", i, data={**data, "completion_tokens": 0, "tool_calls": []}))
