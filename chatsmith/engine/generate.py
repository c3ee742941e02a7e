"""Generation in the caller's own thread: the engine's scheduler, stepped synchronously.

For one user at a time (the terminal chat, a script) there is no need for a background
thread; `Generator.stream` runs exactly the scheduler the engine runs, so a reply is the
same tokens either way. `generate_uncached` is the slow reference the cache must match.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.memory import plan_kv
from chatsmith.engine.runner import cache_dtype
from chatsmith.engine.sampling import SamplingParams
from chatsmith.engine.scheduler import Scheduler
from chatsmith.engine.sequence import Completion, Event, PromptTooLong, Request
from chatsmith.engine.tool_turns import parse_tool_call
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer

__all__ = ["Event", "Generator", "generate_uncached", "parse_tool_call"]


class Generator:
    """Streams the events of one request at a time through a private scheduler."""

    def __init__(
        self,
        model: GPT,
        tok: BPETokenizer,
        autocast: Any = None,
        max_len: int | None = None,
        slots: int | None = None,
        compile: bool = False,
        prefix_slots: int = 4,
        kv_budget: int | str | None = None,
    ) -> None:
        """compile: decode through a compiled graph (engine/decode.py), compiled here.
        slots: the most sequences at once (default 32); kv_budget and max_len: as the
        engine's kv_budget and max_context (engine/memory.py)."""
        self.model, self.tok = model, tok
        w = model.embed_tokens.weight
        plan = plan_kv(model, cache_dtype(model, autocast, compile), kv_budget, max_len, w.device)
        self.max_len = plan.context
        self.sched = Scheduler(
            model,
            tok,
            slots or 32,
            self.max_len,
            prefix_slots=prefix_slots,
            autocast=autocast,
            compile=compile,
            budget=plan.budget_tokens,
        )
        self.sched.warm_up()

    def stream(self, prompt: list[int], params: SamplingParams, run_tools: bool = True) -> Iterator[Event]:
        params.validate(self.model.cfg.vocab_size)
        if len(prompt) >= self.max_len:
            raise PromptTooLong(len(prompt), self.max_len)
        if params.n > self.sched.n_slots:
            raise ChatsmithError(f"n={params.n} is more than this generator's {self.sched.n_slots} slots")
        req = Request(list(prompt), params, run_tools)
        self.sched.add(req)
        try:
            while True:
                yield from req.pop_events()
                if req.finished:
                    return
                self.sched.step()
        finally:
            if not req.finished:  # the caller stopped reading (or a step failed): free the slot
                req.cancel()
                while not req.finished and self.sched.holds(req):
                    self.sched.step()

    def run(self, prompts: list[list[int]], params: SamplingParams, run_tools: bool = True) -> list[Request]:
        """All prompts batched through the scheduler (as many at once as it has slots);
        the finished requests, each still holding its events (`pop_events`)."""
        params.validate(self.model.cfg.vocab_size)
        reqs = []
        for p in prompts:
            if len(p) >= self.max_len:
                raise PromptTooLong(len(p), self.max_len)
            reqs.append(Request(list(p), params, run_tools))
            self.sched.add(reqs[-1])
        while self.sched.busy:
            self.sched.step()
        return reqs

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, run_tools: bool = True
    ) -> list[list[Completion]]:
        """All prompts batched through the scheduler: one list of n completions per prompt."""
        reqs = self.run(prompts, params, run_tools)
        return [[c for c in r.completions if c is not None] for r in reqs]


@torch.inference_mode()
def generate_uncached(
    model: GPT, prompt: list[int], max_new_tokens: int, stop_id: int | None = None
) -> list[int]:
    """Greedy decoding by a full forward pass per token: the reference the cache must match."""
    ids = list(prompt)
    device = model.embed_tokens.weight.device
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids], device=device))[:, -1, :]
        t = int(logits.argmax(-1))
        ids.append(t)
        if t == stop_id:
            break
    return ids[len(prompt) :]
