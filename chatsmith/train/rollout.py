"""Rollouts for RL: the one place where training calls the inference engine.

A rollout is rebuilt token for token as the model saw it: the prompt, the tokens it
sampled, and the tool results the engine fed back between its turns (the same bytes as
`tool_response_ids`). The mask marks the sampled tokens, the only ones RL trains.
The batched engine serves every group at once; without it (an older engine) the
sequential generator does the same work one answer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from chatsmith.common.device import autocast
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import tool_response_ids

RESULT_SEP = "\n</tool_response>\n<tool_response>\n"  # several results share one tool turn


@dataclass
class Sample:
    ids: list[int] = field(default_factory=list)  # prompt + everything after it, in order
    mask: list[int] = field(default_factory=list)  # 1 on tokens the model sampled
    token_ids: list[int] = field(default_factory=list)  # the sampled tokens only
    final_text: str = ""  # the answer after the last tool result (what a user reads)
    finish_reason: str = ""


class RolloutBuilder:
    """Folds a stream of engine events (tokens, tool results, done) into a Sample."""

    def __init__(self, tok: BPETokenizer, prompt: list[int]) -> None:
        self.tok = tok
        self.s = Sample(list(prompt), [0] * len(prompt))
        self.pending: list[str] = []
        self.turn: list[int] = []  # tokens since the last tool result

    def token(self, t: int) -> None:
        if self.pending:  # the engine fed the results back before this token
            feed = tool_response_ids(self.tok, RESULT_SEP.join(self.pending))
            self.s.ids += feed
            self.s.mask += [0] * len(feed)
            self.pending, self.turn = [], []
        self.s.ids.append(t)
        self.s.mask.append(1)
        self.s.token_ids.append(t)
        self.turn.append(t)

    def tool_result(self, text: str) -> None:
        self.pending.append(text)

    def done(self, finish_reason: str) -> Sample:
        self.s.finish_reason = finish_reason
        self.s.final_text = self.tok.decode(
            [t for t in self.turn if t != self.tok.im_end_id], skip_special=False
        )
        return self.s


class Sampler:
    """sample(prompts, params) -> a group of params.n Samples per prompt."""

    def __init__(
        self, model: GPT, tok: BPETokenizer, device: torch.device, dtype: torch.dtype, max_batch: int = 64
    ) -> None:
        self.model, self.tok, self.device, self.dtype = model, tok, device, dtype
        self.engine: Any = None
        try:
            from chatsmith.engine.engine import Engine
        except ImportError:
            Engine = None
        if Engine is not None:
            # The engine generates with the training weights themselves: no dtype cast (it would
            # cast them in place) and no prefix cache (cached keys go stale when the weights move).
            self.engine = Engine(model, tok, dtype=None, max_batch=max_batch, prefix_slots=0)
            self.engine.start()

    def sample(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        n = params.n
        if self.engine is not None:
            return self._sample_engine(prompts, params, n)
        return self._sample_sequential(prompts, params, n)

    def _sample_engine(self, prompts: list[list[int]], params: SamplingParams, n: int) -> list[list[Sample]]:
        reqs = [self.engine.submit(p, params, run_tools=True) for p in prompts]
        out = []
        for p, req in zip(prompts, reqs):
            builders = [RolloutBuilder(self.tok, p) for _ in range(n)]
            done: list[Sample | None] = [None] * n
            for ev in req.events():
                b = builders[ev.index]
                if ev.kind == "token" and ev.token >= 0:  # -1 carries held-back text only
                    b.token(ev.token)
                elif ev.kind == "tool_result":
                    b.tool_result(ev.text)
                elif ev.kind == "done":
                    done[ev.index] = b.done(ev.data.get("finish_reason", ""))
            out.append([d if d is not None else b.done("cancelled") for d, b in zip(done, builders)])
        return out

    def _sample_sequential(
        self, prompts: list[list[int]], params: SamplingParams, n: int
    ) -> list[list[Sample]]:
        ac = autocast(self.device, self.dtype) if self.dtype != torch.float32 else None
        gen = Generator(self.model, self.tok, ac)
        out = []
        for p in prompts:
            group = []
            for i in range(n):
                seed = None if params.seed is None else params.seed + i
                b = RolloutBuilder(self.tok, p)
                finish = ""
                for ev in gen.stream(p, replace(params, seed=seed, n=1)):
                    if ev.kind == "token":
                        b.token(ev.token)
                    elif ev.kind == "tool_result":
                        b.tool_result(ev.text)
                    elif ev.kind == "done":
                        finish = ev.data.get("finish_reason", "")
                group.append(b.done(finish))
            out.append(group)
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown(drain=False)
            self.engine = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
