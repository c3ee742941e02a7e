"""The KV cache: one slot per sequence, each at its own length, for continuous batching.

The cache holds keys and values and how many tokens each slot holds; it does not take part
in a forward pass. The engine's runner describes a forward to the model with an `AttnMeta`
(model/attention.py) that points at this storage, and stores the keys and values the
forward hands back afterwards (`append` for a decode step, `store_prompts` for prompts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Stores one decode step (k_cache, v_cache, k, v, pos) in place of `append`'s indexing.
StoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


class SlotKVCache:
    """Keys and values of every layer for n_slots sequences of up to max_len tokens each.

    Stored (n_layer, n_slots, max_len, n_kv_head, head_dim), allocated once: a position's
    keys of all heads are one run, so a sequence's cached keys are one contiguous block that
    the CPU decode kernel reads in order, and a decode step stores one run per layer and
    sequence (chatsmith/kernels/cpu/ops.py). Attention sees them as (B, G, L, D) views,
    the layout the projections produce, which SDPA takes on every device. The engine keeps
    live sequences in slots 0..n-1 (moving one when another leaves) so a decode step reads a
    view of the storage, never a gathered copy.
    """

    def __init__(
        self,
        n_slots: int,
        n_layer: int,
        n_kv_head: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layer, n_slots, max_len, n_kv_head, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len, self.n_slots = max_len, n_slots
        self.device = self.k.device
        self.lengths = [0] * n_slots

    def bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def room(self, slot: int, T: int) -> int:
        """The tokens slot holds, after checking that T more fit."""
        held = self.lengths[slot]
        if (end := held + T) > self.max_len:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        return held

    def decode_lengths(self, n: int) -> list[int]:
        """The lengths of slots 0..n-1, after checking that each takes one more token."""
        lens = self.lengths[:n]
        if max(lens) >= self.max_len:
            raise ValueError(f"KV cache overflow: a slot holds {max(lens)} of {self.max_len} tokens")
        return lens

    def append(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, store: StoreFn | None = None
    ) -> None:
        """Store one new token per slot 0..n-1 (k, v: (n_layer, n, G, D), a decode step's)
        at positions pos (n,), each slot's length, and move the lengths on. store: a
        function doing the copy instead of indexing (the CPU kernels' store_decoded)."""
        n = k.size(1)
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        if store is not None:
            store(self.k, self.v, k, v, pos)
        else:
            rows = torch.arange(n, device=self.device)
            self.k[:, rows, pos] = k  # indexes (n_layer, n, G, D)
            self.v[:, rows, pos] = v
        for i in range(n):
            self.lengths[i] += 1

    def store_prompts(self, k: torch.Tensor, v: torch.Tensor, segments: list[tuple[int, int]]) -> None:
        """Store a packed prefill's keys/values (k, v: (n_layer, T, G, D)) into its slots:
        segments (slot, tokens) in order, each after what its slot holds; the lengths move on."""
        at = 0
        for slot, T in segments:
            P = self.room(slot, T)
            self.k[:, slot, P : P + T] = k[:, at : at + T].to(self.k.dtype)
            self.v[:, slot, P : P + T] = v[:, at : at + T].to(self.v.dtype)
            self.lengths[slot] = P + T
            at += T

    def copy_slot(self, src: int, dst: int, n: int | None = None) -> None:
        """Copy the first n tokens (default: all) of slot src into slot dst."""
        n = self.lengths[src] if n is None else n
        if src != dst and n > 0:
            self.k[:, dst, :n] = self.k[:, src, :n]
            self.v[:, dst, :n] = self.v[:, src, :n]
        self.lengths[dst] = n

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0
