"""Key/value caches for generation.

The model asks a cache three things during a forward pass with one: the positions of
the new tokens (`positions`), per layer the keys/values to attend to and which of them
each new query may see (`update`), and to move on when all layers ran (`advance`).

- `KVCache`: B sequences that advance in lock step (one prompt, or a batch of equal
  prompts); the simple case.
- `SlotKVCache`: one slot per sequence, each at its own length, for continuous
  batching. The engine binds the rows of the next forward pass: all decoding sequences
  (slots 0..n-1, one token each) or one slot's chunk of prompt.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Cache(Protocol):
    def positions(self, T: int) -> torch.Tensor: ...

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...

    def advance(self, n: int) -> None: ...


def _causal_mask(T: int, P: int, device: torch.device) -> torch.Tensor:
    """(T, P + T): query t sees the P cached keys and the new keys up to itself."""
    return torch.ones(T, P + T, dtype=torch.bool, device=device).tril(diagonal=P)


class _Storage:
    """Keys and values of every layer for `rows` sequences of up to max_len tokens."""

    def __init__(
        self,
        rows: int,
        n_layer: int,
        n_kv_head: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layer, rows, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.device = self.k.device
        self._mask: torch.Tensor | None = None


class KVCache(_Storage):
    """Keys and values of all layers for B sequences that advance in lock step."""

    def __init__(self, batch: int, *args: object, **kw: object) -> None:
        super().__init__(batch, *args, **kw)  # type: ignore[arg-type]
        self.length = 0

    def positions(self, T: int) -> torch.Tensor:
        if self.length + T > self.max_len:
            raise ValueError(f"KV cache overflow: {self.length + T} tokens > capacity {self.max_len}")
        # One new token sees every cached key: no mask needed.
        self._mask = None if T == 1 else _causal_mask(T, self.length, self.device)
        return torch.arange(self.length, self.length + T, device=self.device)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end], self._mask

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


class SlotKVCache(_Storage):
    """n_slots independent sequences of up to max_len tokens each.

    Memory is n_layer x n_slots x max_len keys and values, allocated once; the engine
    keeps live sequences in slots 0..n-1 (moving one when another leaves) so a decode
    step attends to a view of the storage, never a gathered copy.
    """

    def __init__(self, n_slots: int, *args: object, **kw: object) -> None:
        super().__init__(n_slots, *args, **kw)  # type: ignore[arg-type]
        self.n_slots = n_slots
        self.lengths = [0] * n_slots
        self._bound: tuple[str, int, int] = ("none", 0, 0)
        self._rows = self._pos = torch.empty(0, dtype=torch.long)

    def bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    # -- binding the rows of the next forward pass ---------------------------------------
    def bind_decode(self, n: int) -> None:
        """The next forward is one new token for each of slots 0..n-1."""
        lens = self.lengths[:n]
        longest = max(lens)
        if longest >= self.max_len:
            raise ValueError(f"KV cache overflow: a slot holds {longest} of {self.max_len} tokens")
        L = longest + 1
        self._pos = torch.tensor(lens, dtype=torch.long, device=self.device)
        if self._rows.numel() != n:
            self._rows = torch.arange(n, device=self.device)
        # Each row sees its own keys up to and including the new token; one row sees all.
        self._mask = None
        if n > 1 and min(lens) + 1 < L:
            self._mask = (torch.arange(L, device=self.device)[None, :] <= self._pos[:, None]).view(n, 1, 1, L)
        self._bound = ("decode", n, L)

    def bind_prefill(self, slot: int, T: int) -> None:
        """The next forward is T prompt tokens of one slot, after what it holds."""
        P = self.lengths[slot]
        if (end := P + T) > self.max_len:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        self._pos = torch.arange(P, P + T, device=self.device)
        self._mask = _causal_mask(T, P, self.device)
        self._bound = ("prefill", slot, P + T)

    # -- the model's side -------------------------------------------------------------------
    def positions(self, T: int) -> torch.Tensor:
        mode = self._bound[0]
        if mode == "decode":
            return self._pos[:, None]  # (n, 1)
        if mode == "prefill":
            return self._pos  # (T,)
        raise RuntimeError("SlotKVCache used without bind_decode/bind_prefill")

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mode, a, L = self._bound
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)  # under autocast the projections may differ
        if mode == "decode":  # k (n, G, 1, D) -> position lengths[b] of slot b
            self.k[layer][self._rows, :, self._pos] = k[:, :, 0]
            self.v[layer][self._rows, :, self._pos] = v[:, :, 0]
            return self.k[layer, :a, :, :L], self.v[layer, :a, :, :L], self._mask
        P = L - k.size(2)  # prefill: k (1, G, T, D)
        self.k[layer, a, :, P:L] = k[0]
        self.v[layer, a, :, P:L] = v[0]
        return self.k[layer, a : a + 1, :, :L], self.v[layer, a : a + 1, :, :L], self._mask

    def advance(self, n: int) -> None:
        mode, a, _ = self._bound
        if mode == "decode":
            for i in range(a):
                self.lengths[i] += n
        else:
            self.lengths[a] += n
        self._bound = ("none", 0, 0)

    # -- the engine's side ------------------------------------------------------------------
    def copy_slot(self, src: int, dst: int, n: int | None = None) -> None:
        """Copy the first n tokens (default: all) of slot src into slot dst."""
        n = self.lengths[src] if n is None else n
        if src != dst and n > 0:
            self.k[:, dst, :, :n] = self.k[:, src, :, :n]
            self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0
