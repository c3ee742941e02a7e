"""The KV cache: one slot per sequence, each at its own length, for continuous batching.

The cache holds keys and values and how many tokens each slot holds; it does not take part
in a forward pass. The engine's runner describes a forward to the model with an `AttnMeta`
(model/attention.py) that points at this storage, and stores the keys and values the
forward hands back afterwards (`append` for a decode step, `store_prompts` for prompts).

On CPUs the storage is virtual memory that the OS backs page by page as tokens are written
(as vAttention does on GPUs: Prabhu et al., 2024, "vAttention: Dynamic Memory Management for
Serving LLMs without PagedAttention"): every slot keeps its full context contiguous, so the
attention kernels read it as before, yet memory grows with the tokens held, not with slots
times context, and a freed slot's pages go back to the OS (`release`).
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Callable

import torch

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux's value; Python <3.13 lacks it
PAGE = mmap.PAGESIZE


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, mmap.mmap | None]:
    """A zero CPU tensor whose pages the OS provides on first write (and the mapping, to give
    pages back); torch.zeros where anonymous mappings are not available."""
    n = 1
    for d in shape:
        n *= d
    size = n * torch.empty((), dtype=dtype).element_size()
    if not sys.platform.startswith("linux") or size == 0:
        return torch.zeros(shape, dtype=dtype), None
    # NORESERVE: the kernel does not count the whole mapping against overcommit; what is
    # written is what is used (the scheduler keeps that within the KV budget).
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
    mm = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return torch.frombuffer(mm, dtype=dtype).view(shape), mm

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
        self._maps: list[mmap.mmap] = []
        if torch.device(device).type == "cpu":
            (self.k, mk), (self.v, mv) = lazy_zeros(shape, dtype), lazy_zeros(shape, dtype)
            self._maps = [m for m in (mk, mv) if m is not None]
        else:
            self.k = torch.zeros(shape, device=device, dtype=dtype)
            self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len, self.n_slots = max_len, n_slots
        self.device = self.k.device
        self.lengths = [0] * n_slots

    def bytes(self) -> int:
        """The storage's size (virtual on CPUs: see `held_bytes` for what tokens use)."""
        return 2 * self.k.numel() * self.k.element_size()

    def token_bytes(self) -> int:
        """Keys and values of one token in every layer."""
        k = self.k
        return 2 * k.size(0) * k.size(3) * k.size(4) * k.element_size()

    def held(self) -> int:
        """Tokens held in all slots."""
        return sum(self.lengths)

    def release(self, slot: int, keep: int = 0) -> None:
        """Give the pages of slot past its first `keep` tokens back to the OS (they read as
        zeros after); nothing where the storage is not a mapping of ours."""
        if not self._maps or keep >= self.max_len:
            return
        row = self.k.stride(2) * self.k.element_size()  # bytes per position
        per_layer = self.k.stride(0) * self.k.element_size()
        for layer in range(self.k.size(0)):
            base = layer * per_layer + slot * self.max_len * row
            start = -(-(base + keep * row) // PAGE) * PAGE  # whole pages only
            end = (base + self.max_len * row) // PAGE * PAGE
            if end > start:
                for m in self._maps:
                    m.madvise(mmap.MADV_DONTNEED, start, end - start)

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
        if self.lengths[dst] > n:
            self.release(dst, n)
        self.lengths[dst] = n

    def free(self, slot: int) -> None:
        if self.lengths[slot]:
            self.release(slot)
        self.lengths[slot] = 0
