"""Turning logits into the next token, for a batch of requests that each bring their own
sampling parameters: penalties, logit bias, temperature, top-k, top-p, min-p, a
per-request seed, logprobs. The semantics follow OpenAI's API and vLLM where they differ
from nothing (e.g. presence/frequency penalties count generated tokens only, the
repetition penalty also counts the prompt)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from chatsmith.common.errors import ChatsmithError


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # keep tokens with p >= min_p * p(most likely); 0 = off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # 1 = off (CTRL, Keskar et al. 2019)
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    max_new_tokens: int = 256
    min_tokens: int = 0
    ignore_eos: bool = False  # keep going past <|im_end|> (benchmarks), as vLLM's flag
    prompt_logprobs: bool = False  # logprob of every prompt token after the first (echo)

    def validate(self, vocab_size: int | None = None) -> SamplingParams:
        """Raise ChatsmithError naming the first bad field."""

        def bad(name: str, why: str) -> None:
            raise ChatsmithError(f"{name} {why}, got {getattr(self, name)!r}")

        if not self.temperature >= 0 or math.isinf(self.temperature):
            bad("temperature", "must be a finite number >= 0")
        if self.top_k < 0:
            bad("top_k", "must be >= 0")
        if not 0 < self.top_p <= 1:
            bad("top_p", "must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            bad("min_p", "must be in [0, 1]")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                bad(name, "must be in [-2, 2]")
        if not 0.01 <= self.repetition_penalty <= 10:  # smaller ones overflow float32 logits
            bad("repetition_penalty", "must be in [0.01, 10]")
        if self.n < 1:
            bad("n", "must be >= 1")
        if self.seed is not None and not 0 <= self.seed < 2**63 - 64:  # + choice index stays in range
            bad("seed", "must be in [0, 2**63 - 64)")
        if not 0 <= self.top_logprobs <= 20:
            bad("top_logprobs", "must be in [0, 20]")
        if self.max_new_tokens < (0 if self.prompt_logprobs else 1):
            bad("max_new_tokens", "must be >= 1 (0 only to score a prompt)")
        if not 0 <= self.min_tokens <= max(self.max_new_tokens, 0):
            bad("min_tokens", "must be between 0 and max_new_tokens")
        if any(not isinstance(s, str) or not s for s in self.stop) or len(self.stop) > 16:
            bad("stop", "must be at most 16 non-empty strings")
        ids = list(self.logit_bias) + list(self.stop_token_ids)
        if vocab_size is not None and any(not 0 <= int(i) < vocab_size for i in ids):
            raise ChatsmithError(f"token ids in logit_bias/stop_token_ids must be in [0, {vocab_size})")
        if any(not -100 <= b <= 100 for b in self.logit_bias.values()):
            raise ChatsmithError("logit_bias values must be in [-100, 100]")
        return self

    @property
    def greedy(self) -> bool:
        # Below 1e-5 dividing logits by it overflows float32; it means greedy (as vLLM reads it).
        return self.temperature < 1e-5


class SeqSampler:
    """One sequence's sampling state: its parameters, random generator and token counts."""

    def __init__(
        self, p: SamplingParams, vocab: int, device: torch.device, prompt: list[int], seed_offset: int = 0
    ) -> None:
        self.p = p
        self.gen: torch.Generator | None = None
        if p.seed is not None:
            self.gen = torch.Generator(device=device).manual_seed(p.seed + seed_offset)
        self.counts: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        if p.presence_penalty or p.frequency_penalty:
            self.counts = torch.zeros(vocab, device=device)
        if p.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            self.seen[torch.tensor(prompt, dtype=torch.long, device=device)] = True
        self.bias: tuple[torch.Tensor, torch.Tensor] | None = None
        if p.logit_bias:
            ids = torch.tensor([int(i) for i in p.logit_bias], dtype=torch.long, device=device)
            self.bias = ids, torch.tensor(list(p.logit_bias.values()), device=device)
        self.generated = 0
        self.adjusts = self.counts is not None or self.seen is not None or self.bias is not None

    def adjust(self, row: torch.Tensor, banned: list[int]) -> torch.Tensor:
        """Penalties, bias and the min-length ban applied to one row of float logits (V,)."""
        p = self.p
        if self.seen is not None:
            r = p.repetition_penalty
            row = torch.where(self.seen, torch.where(row > 0, row / r, row * r), row)
        if self.counts is not None:
            row = row - p.frequency_penalty * self.counts - p.presence_penalty * (self.counts > 0).float()
        if self.bias is not None:
            row = row.index_add(0, self.bias[0], self.bias[1])
        if banned:
            row = row.index_fill(0, torch.tensor(banned, device=row.device), float("-inf"))
        return row

    def observe(self, token: int) -> None:
        self.generated += 1
        if self.counts is not None:
            self.counts[token] += 1
        if self.seen is not None:
            self.seen[token] = True


def filter_sorted(
    sorted_logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """Mask (with -inf) the tokens each row's top-k / top-p / min-p drops.

    sorted_logits (B, V) in descending order; top_k (B,) with 0 = off, top_p, min_p (B,).
    The most likely token always survives.
    """
    V = sorted_logits.size(-1)
    rank = torch.arange(V, device=sorted_logits.device)[None, :]
    drop = (top_k[:, None] > 0) & (rank >= top_k[:, None])
    probs = sorted_logits.softmax(dim=-1)
    # Nucleus sampling (Holtzman et al. 2019): the smallest prefix whose mass reaches top_p.
    drop |= probs.cumsum(dim=-1) - probs > top_p[:, None]
    drop |= probs < min_p[:, None] * probs[:, :1]
    drop[:, 0] = False
    return sorted_logits.masked_fill(drop, float("-inf"))


@dataclass(slots=True)
class Draw:
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)


def sample_batch(
    logits: torch.Tensor,
    samplers: list[SeqSampler],
    banned: list[list[int]],
    top: torch.Tensor | None = None,
) -> list[Draw]:
    """logits (B, V) -> one Draw per row, each row sampled with its own parameters.

    top (B,), when given, is logits.argmax(-1) already computed (the compiled decode step
    returns it): the greedy tokens, unless a penalty, bias or ban changes a row."""
    logits = logits.float()
    rows = [i for i, s in enumerate(samplers) if s.adjusts or banned[i]]
    if rows:
        logits = logits.clone()
        for i in rows:
            logits[i] = samplers[i].adjust(logits[i], banned[i])
    tokens = top if top is not None and not rows else logits.argmax(dim=-1)
    hot = [i for i, s in enumerate(samplers) if not s.p.greedy]
    if hot:
        tokens = tokens.clone()  # rows are replaced below; `top` stays the caller's
        dev = logits.device
        temps = torch.tensor([samplers[i].p.temperature for i in hot], device=dev)
        sub = logits[hot] / temps[:, None]
        order = None  # the filters work on sorted rows; plain temperature sampling needs no sort
        if any(samplers[i].p.top_k or samplers[i].p.top_p < 1 or samplers[i].p.min_p for i in hot):
            sub, order = sub.sort(dim=-1, descending=True)
            sub = filter_sorted(
                sub,
                torch.tensor([samplers[i].p.top_k for i in hot], device=dev),
                torch.tensor([samplers[i].p.top_p for i in hot], device=dev),
                torch.tensor([samplers[i].p.min_p for i in hot], device=dev),
            )
        pick = draw(sub.softmax(dim=-1), [samplers[i].gen for i in hot])
        if order is not None:
            pick = order.gather(-1, pick[:, None])[:, 0]
        tokens[torch.tensor(hot, device=dev)] = pick
    out = [Draw(int(t)) for t in tokens.tolist()]
    want = [i for i, s in enumerate(samplers) if s.p.logprobs or s.p.top_logprobs]
    if want:
        # Logprobs of the distribution the model gave (after penalties and bias, before
        # temperature), as OpenAI reports them.
        lp = logits[want].log_softmax(dim=-1)
        for j, i in enumerate(want):
            out[i].logprob = float(lp[j, out[i].token])
            k = samplers[i].p.top_logprobs
            if k:
                v, ix = lp[j].topk(k)
                out[i].top = list(zip(ix.tolist(), v.tolist()))
    return out


def draw(probs: torch.Tensor, gens: list[torch.Generator | None]) -> torch.Tensor:
    """One index per row of probs (R, V), row r drawn with gens[r] (None: torch's global
    generator) by inverting its cumulative sum at one uniform number: a seeded row draws the
    same whatever else is in the batch, and one vectorised search replaces a multinomial call
    per row (8 % of an RL run's time at 64 rows went to those calls)."""
    dev = probs.device
    u = torch.stack([torch.rand((), dtype=torch.float64, generator=g, device=dev) for g in gens])
    cdf = probs.double().cumsum(-1)
    # right=True: the first index whose cdf exceeds u * total, never a zero-probability one.
    at = (u * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, at, right=True).squeeze(-1).clamp_max(probs.size(-1) - 1)


def sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,), every row with the same parameters and generator."""
    if p.greedy:
        return logits.argmax(dim=-1)
    B = logits.size(0)
    scaled = logits.float() / p.temperature
    if not (p.top_k or p.top_p < 1 or p.min_p):
        return draw(scaled.softmax(dim=-1), [gen] * B)
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    sorted_logits = filter_sorted(
        sorted_logits,
        torch.full((B,), p.top_k, device=logits.device),
        torch.full((B,), p.top_p, device=logits.device),
        torch.full((B,), p.min_p, device=logits.device),
    )
    pick = draw(sorted_logits.softmax(dim=-1), [gen] * B)
    return order.gather(-1, pick[:, None]).squeeze(-1)
