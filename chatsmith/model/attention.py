"""The network's one attention entry: causal attention, or attention over a slot KV cache.

`Attend` is what each attention layer calls with its q, k, v and the forward's metadata:
without metadata (training, evaluation, a full pass) it is causal SDPA; with an `AttnMeta`
each sequence's new queries attend to the first past[s] positions of its cache slot and to
its own new keys, causally. A backend from chatsmith.kernels may replace the module (the
engine or the trainer swap it in; the network never asks).

The cached attention hands each layer's new keys and values back (`AttnMeta.new_k`,
`new_v`) for the engine's runner to store after the forward: inside a compiled graph,
writing into the cache would make inductor copy all of it every step (engine/decode.py).
The plain cached attention gives SDPA each sequence's cached keys and its new ones as one
tensor: inside a graph a copy of the positions read; eagerly (`AttnMeta.stage`) the cache
itself, the new keys put first in the positions past what the slot holds, which hold nothing
until the runner stores the step. The same inputs either way, so the same numbers, and an
eager decode step does not copy every sequence's context in every layer (at batch 32 that
copy cost more than half again of the attention's time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(T: int, P: int, device: torch.device) -> torch.Tensor:
    """(T, P + T): query t sees the P cached keys and the new keys up to itself."""
    return torch.ones(T, P + T, dtype=torch.bool, device=device).tril(diagonal=P)


@dataclass(eq=False)
class AttnMeta:
    """One forward over a slot cache: S sequences, each with new tokens after what its slot holds.

    The new tokens come in one of two layouts. By rows (`lens` is None): one new token per
    sequence, sequence b in row b and cache slot b (a decode step, ids (S, 1)). Packed: all
    sequences one after another in one row (ids (1, sum(lens))), sequence s for slot slots[s].
    k, v: the cache's storage (n_layer, n_slots, max_len, G, D), read by the attention.
    """

    k: torch.Tensor
    v: torch.Tensor
    pos: torch.Tensor  # each new token's position: (S, 1) by rows, (T,) packed
    past: torch.Tensor  # (S,) int64: the tokens each sequence's slot holds already
    # By rows: the positions of each slot that a row reads, its new token's included (at least
    # max(past) + 1; more are masked), and which of them each row sees (n, 1, 1, width), None
    # when every row sees all of them.
    width: int = 0
    mask: torch.Tensor | None = None
    slots: torch.Tensor | None = None  # packed: (S,) int64, each sequence's slot
    lens: torch.Tensor | None = None  # packed: (S,) int64, each sequence's new tokens
    spans: list[tuple[int, int, int]] | None = None  # packed, eager: (slot, past, tokens) each
    # Eager forwards only: the plain attention may put the new keys in place, in the slot
    # positions past what it holds (nothing lives there until the runner stores the step).
    stage: bool = False
    new_k: list[torch.Tensor] = field(default_factory=list)  # per layer (tokens, G, D)
    new_v: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def rows(cls, k: torch.Tensor, v: torch.Tensor, past: list[int], stage: bool = False) -> AttnMeta:
        """A decode step of slots 0..n-1 holding `past` tokens each (eager)."""
        dev, width = k.device, max(past) + 1
        past_t = torch.tensor(past, dtype=torch.long, device=dev)
        mask = None  # each row sees its own keys up to and including the new token; one row sees all
        if len(past) > 1 and min(past) + 1 < width:
            mask = (torch.arange(width, device=dev)[None, :] <= past_t[:, None]).view(len(past), 1, 1, width)
        return cls(k, v, past_t[:, None], past_t, width=width, mask=mask, stage=stage)

    @classmethod
    def packed(
        cls, k: torch.Tensor, v: torch.Tensor, spans: list[tuple[int, int, int]], stage: bool = False
    ) -> AttnMeta:
        """Prompts packed in one row: (slot, past, tokens) each, in order (eager)."""
        dev = k.device
        pos = torch.cat([torch.arange(P, P + T, device=dev) for _, P, T in spans])
        slots, past, lens = (torch.tensor(c, dtype=torch.long, device=dev) for c in zip(*spans))
        return cls(k, v, pos, past, slots=slots, lens=lens, spans=spans, stage=stage)

    def hand_back(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep a layer's new keys/values k, v (B, G, T, D), in the cache's dtype, as
        (tokens, G, D) in the order of the batch: the cache's own order."""
        if self.lens is None:  # (n, G, 1, D): one token per row
            self.new_k.append(k[:, :, 0])
            self.new_v.append(v[:, :, 0])
        else:  # (1, G, T, D): one packed row
            self.new_k.append(k[0].transpose(0, 1))
            self.new_v.append(v[0].transpose(0, 1))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, H, T, D), k, v (B, G, T, D) -> (B, H, T, D), each query over the keys up to its own."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.size(1) != k.size(1))


def _sdpa(
    q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None, gqa: bool
) -> torch.Tensor:
    # The cache's dtype is the attention's: on CPUs a float32 cache under bf16 weights
    # decodes several times faster than bf16 attention does.
    y = F.scaled_dot_product_attention(q.to(K.dtype), K, V, attn_mask=mask, enable_gqa=gqa)
    return y.to(q.dtype)


def _by_rows(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: AttnMeta) -> torch.Tensor:
    """One new token per row b, attending over slot b's first width positions, its own included."""
    n, rows = q.size(0), torch.arange(q.size(0), device=q.device)
    if m.stage:  # in place: position past[b] of slot b is free until the step is stored
        K, V = m.k[layer], m.v[layer]
    else:  # a copy of the rows read, so that the cache itself stays untouched
        K, V = m.k[layer, :n, : m.width].clone(), m.v[layer, :n, : m.width].clone()
    K[rows, m.past] = k[:, :, 0]
    V[rows, m.past] = v[:, :, 0]
    K, V = K[:n, : m.width].transpose(1, 2), V[:n, : m.width].transpose(1, 2)  # (n, G, width, D)
    return _sdpa(q, K, V, m.mask, q.size(1) != k.size(1))


def _packed(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: AttnMeta) -> torch.Tensor:
    """Each packed prompt over its slot's first past positions and its own keys, causally."""
    assert m.spans is not None, "the plain packed attention runs eagerly (AttnMeta.packed)"
    out, i, gqa = [], 0, q.size(1) != k.size(1)
    for slot, P, T in m.spans:
        kn, vn = k[0, :, i : i + T].transpose(0, 1), v[0, :, i : i + T].transpose(0, 1)  # (T, G, D)
        if m.stage:  # in place, past what the slot holds
            m.k[layer, slot, P : P + T] = kn
            m.v[layer, slot, P : P + T] = vn
            K, V = m.k[layer, slot : slot + 1, : P + T], m.v[layer, slot : slot + 1, : P + T]
        else:
            K = torch.cat((m.k[layer, slot, :P], kn))[None]
            V = torch.cat((m.v[layer, slot, :P], vn))[None]
        mask = causal_mask(T, P, q.device)
        out.append(_sdpa(q[:, :, i : i + T], K.transpose(1, 2), V.transpose(1, 2), mask, gqa))
        i += T
    return torch.cat(out, dim=2)


def cached_attention(
    layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: AttnMeta
) -> torch.Tensor:
    """q (B, H, T, D), the new k, v (B, G, T, D) -> (B, H, T, D) over the cache `m` describes.

    The keys each query sees are gathered as one tensor for SDPA: in place when the meta
    allows it (eager), else from a copy of what is read (inside a compiled graph)."""
    k, v = k.to(m.k.dtype), v.to(m.v.dtype)  # under autocast the projections may differ
    m.hand_back(k, v)
    return _by_rows(layer, q, k, v, m) if m.lens is None else _packed(layer, q, k, v, m)


class Attend(nn.Module):
    """The default attention of layer `layer`: causal SDPA without metadata, the cached
    attention with it. chatsmith.kernels swaps in subclasses where measured faster."""

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = layer

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMeta | None = None
    ) -> torch.Tensor:
        if meta is None:
            return self.causal(q, k, v)
        return self.cached(q, k, v, meta)

    def causal(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return causal_attention(q, k, v)

    def cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        return cached_attention(self.layer, q, k, v, meta)
