"""Turning logits into the next token: greedy, temperature, top-k, top-p."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chatsmith.common.errors import ChatsmithError


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    max_new_tokens: int = 256
    seed: int | None = None
    ignore_eos: bool = False  # keep going past <|im_end|> (benchmarks), as vLLM's flag

    def validate(self) -> SamplingParams:
        if self.temperature < 0:
            raise ChatsmithError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ChatsmithError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ChatsmithError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ChatsmithError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        return self


def sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    if p.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / p.temperature
    if p.top_k > 0:
        k = min(p.top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2019): keep the smallest set of tokens
        # whose probability reaches top_p; the most likely token always stays.
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
