"""Rollouts for RL: the one place where training calls the inference engine.

A rollout is rebuilt token for token as the model saw it: the prompt, the tokens it
sampled, and the tool results the engine fed back between its turns (the same bytes as
`tool_results_ids`). The mask marks the sampled tokens, the only ones RL trains.
The batched engine serves every group at once; without it (an older engine) the
sequential generator does the same work one answer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import tool_results_ids


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
            feed = tool_results_ids(self.tok, self.pending)
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
        # The engine's scheduler, stepped on this (the training) thread: continuous batching
        # without a second thread of torch work, which would slow both (engine/engine.py).
        # It generates with the training weights themselves: no dtype cast (that would cast
        # them in place) and no prefix cache (cached keys go stale when the weights move).
        self.batched = Generator(model, tok, slots=max_batch, prefix_slots=0)

    def sample(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        return self._sample_batched(prompts, params, params.n)

    def _sample_batched(self, prompts: list[list[int]], params: SamplingParams, n: int) -> list[list[Sample]]:
        reqs = self.batched.run(prompts, params, run_tools=True)
        out = []
        for p, req in zip(prompts, reqs):
            builders = [RolloutBuilder(self.tok, p) for _ in range(n)]
            done: list[Sample | None] = [None] * n
            for ev in req.pop_events():
                b = builders[ev.index]
                if ev.kind == "token" and ev.token >= 0:  # -1 carries held-back text only
                    b.token(ev.token)
                elif ev.kind == "tool_result":
                    b.tool_result(ev.text)
                elif ev.kind == "done":
                    done[ev.index] = b.done(ev.data.get("finish_reason", ""))
            out.append([d if d is not None else b.done("cancelled") for d, b in zip(done, builders)])
        return out

    def close(self) -> None:
        """Drop the KV cache (the trainer's memory is worth more after the rollouts)."""
        self.batched = None  # type: ignore[assignment]

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
