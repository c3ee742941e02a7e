"""Key/value caches for generation.

The model asks a cache three things during a forward pass with one: the positions of
the new tokens (`positions`), per layer the attention of the new queries over the cached
keys and the new ones (`attend`, which also stores the new keys/values), and to move on
when all layers ran (`advance`).

- `KVCache`: B sequences that advance in lock step (one prompt, or a batch of equal
  prompts); the simple case.
- `SlotKVCache`: one slot per sequence, each at its own length, for continuous
  batching. The engine binds the rows of the next forward pass: all decoding sequences
  (slots 0..n-1, one token each) or one slot's chunk of prompt.
- `DecodeView`: a read-only look at a `SlotKVCache` for one decode step, for a compiled
  decode graph (engine/decode.py), which stores the new keys/values after the step.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from chatsmith.model import decode_attention


class Cache(Protocol):
    def positions(self, T: int) -> torch.Tensor: ...

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...

    def advance(self, n: int) -> None: ...


def _causal_mask(T: int, P: int, device: torch.device) -> torch.Tensor:
    """(T, P + T): query t sees the P cached keys and the new keys up to itself."""
    return torch.ones(T, P + T, dtype=torch.bool, device=device).tril(diagonal=P)


class _Storage:
    """Keys and values of every layer for `rows` sequences of up to max_len tokens.

    Stored (n_layer, rows, max_len, n_kv_head, head_dim): a position's keys of all heads
    are one run, so a sequence's cached keys are one contiguous block that the CPU decode
    kernel reads in order, and a decode step stores one run per layer and sequence (see
    model/decode_attention.py). Attention sees them as (B, G, L, D) views, the layout the
    projections produce, which SDPA takes on every device.
    """

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
        shape = (n_layer, rows, max_len, n_kv_head, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.device = self.k.device
        self._mask: torch.Tensor | None = None

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store the new k, v (B, G, T, D); the keys/values to attend to, and the mask."""
        raise NotImplementedError

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, H, T, D), the new k, v (B, G, T, D) -> attention output (B, H, T, D)."""
        k, v, mask = self.update(layer, k, v)  # (B, G, L, D), mask (B|1, 1, T, L) or None
        # The cache's dtype is the attention's: on CPUs a float32 cache under bf16
        # weights decodes several times faster than bf16 attention does.
        y = F.scaled_dot_product_attention(
            q.to(k.dtype), k, v, attn_mask=mask, enable_gqa=q.size(1) != k.size(1)
        )
        return y.to(q.dtype)


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
        self.k[layer, :, self.length : end] = k.transpose(1, 2)
        self.v[layer, :, self.length : end] = v.transpose(1, 2)
        return self.k[layer, :, :end].transpose(1, 2), self.v[layer, :, :end].transpose(1, 2), self._mask

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
        self._segments: list[tuple[int, int, int, torch.Tensor]] = []

    def bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def room(self, slot: int, T: int) -> int:
        """The tokens slot holds, after checking that T more fit."""
        held = self.lengths[slot]
        if (end := held + T) > self.max_len:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        return held

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

    def bind_prefills(self, segments: list[tuple[int, int]]) -> None:
        """The next forward is one row packing several slots' prompts: (slot, T) in order,
        each after what its slot holds. Each segment attends to its own slot only."""
        pos, self._segments = [], []
        for slot, T in segments:
            P = self.room(slot, T)
            pos.append(torch.arange(P, P + T, device=self.device))
            self._segments.append((slot, P, T, _causal_mask(T, P, self.device)))
        self._pos = torch.cat(pos)
        self._bound = ("prefills", 0, 0)

    def bind_prefill(self, slot: int, T: int) -> None:
        """The next forward is T prompt tokens of one slot, after what it holds."""
        P = self.room(slot, T)
        self._pos = torch.arange(P, P + T, device=self.device)
        self._mask = _causal_mask(T, P, self.device)
        self._bound = ("prefill", slot, P + T)

    # -- the model's side -------------------------------------------------------------------
    def positions(self, T: int) -> torch.Tensor:
        mode = self._bound[0]
        if mode == "decode":
            return self._pos[:, None]  # (n, 1)
        if mode in ("prefill", "prefills"):
            return self._pos  # (T,)
        raise RuntimeError("SlotKVCache used without bind_decode/bind_prefill")

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mode, a, L = self._bound
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)  # under autocast the projections may differ
        if mode == "decode":  # k (n, G, 1, D) -> position lengths[b] of slot b
            self.k[layer][self._rows, self._pos] = k[:, :, 0]
            self.v[layer][self._rows, self._pos] = v[:, :, 0]
            return self._seen(layer, slice(0, a), L)
        P = L - k.size(2)  # prefill: k (1, G, T, D)
        self.k[layer, a, P:L] = k[0].transpose(0, 1)
        self.v[layer, a, P:L] = v[0].transpose(0, 1)
        return self._seen(layer, slice(a, a + 1), L)

    def _seen(
        self, layer: int, rows: slice, L: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The first L positions of rows, as (B, G, L, D) views, and the bound mask."""
        return self.k[layer, rows, :L].transpose(1, 2), self.v[layer, rows, :L].transpose(1, 2), self._mask

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._bound[0] != "prefills":
            return super().attend(layer, q, k, v)
        # A packed row of several prompts: the projections ran once for all of them; each
        # segment stores its keys in its slot and attends over that slot alone.
        out, i = [], 0
        for slot, P, T, mask in self._segments:
            self.k[layer, slot, P : P + T] = k[0, :, i : i + T].transpose(0, 1)
            self.v[layer, slot, P : P + T] = v[0, :, i : i + T].transpose(0, 1)
            K, V, _ = self._seen(layer, slice(slot, slot + 1), P + T)
            qs = q[:, :, i : i + T].to(K.dtype)
            y = F.scaled_dot_product_attention(qs, K, V, attn_mask=mask, enable_gqa=q.size(1) != K.size(1))
            out.append(y.to(q.dtype))
            i += T
        return torch.cat(out, dim=2)

    def advance(self, n: int) -> None:
        mode, a, _ = self._bound
        if mode == "prefills":
            for slot, _, T, _ in self._segments:
                self.lengths[slot] += T
            self._bound = ("none", 0, 0)
            return
        if mode == "decode":
            for i in range(a):
                self.lengths[i] += n
        else:
            self.lengths[a] += n
        self._bound = ("none", 0, 0)

    # -- the engine's side ------------------------------------------------------------------
    def append(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        """Store one new token per slot 0..n-1 (k, v: (n_layer, n, G, D), from a DecodeView
        step) at positions pos (n,), each slot's length, and move the lengths on."""
        n = k.size(1)
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        if self.device.type == "cpu" and decode_attention.ready():  # a copy loop: ~0.1 ms less a step
            decode_attention.store_decoded(self.k, self.v, k, v, pos)
        else:
            rows = torch.arange(n, device=self.device)
            self.k[:, rows, pos] = k  # indexes (n_layer, n, G, D)
            self.v[:, rows, pos] = v
        for i in range(n):
            self.lengths[i] += 1

    def store_prompts(self, k: torch.Tensor, v: torch.Tensor, segments: list[tuple[int, int]]) -> None:
        """Store a packed prefill's keys/values (k, v: (n_layer, T, G, D), from a
        PrefillView) into its slots: segments (slot, tokens) in order, each after what its
        slot holds; the lengths move on."""
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


class DecodeView:
    """Slots 0..n-1 of a SlotKVCache, read-only, for one decode step inside a compiled graph.

    A compiled graph that writes into its input storage makes inductor copy the whole
    storage every step, so this view never writes: each query attends over its slot's
    cached keys (positions < pos) and, separately, over its own new key, in one softmax;
    the new keys/values are handed back (`new_k`, `new_v`) for the caller to store.
    k, v: the cache's (n_layer, slots, max_len, G, D) storage; pos (n,): each slot's length;
    L: the longest of them (at least the largest pos). kernel: attend with the C++ kernel of
    model/decode_attention.py (loaded by the caller) instead of the PyTorch ops below.
    """

    def __init__(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, L: int, kernel: bool = False
    ) -> None:
        self.k, self.v, self.pos, self.L = k, v, pos, L
        self.kernel = kernel  # attend with model/decode_attention.py's kernel (loaded)
        self.new_k: list[torch.Tensor] = []
        self.new_v: list[torch.Tensor] = []

    def positions(self, T: int) -> torch.Tensor:
        return self.pos[:, None]  # (n, 1): one new token per slot

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, H, _, D = q.shape  # q (n, H, 1, D); k, v (n, G, 1, D)
        G, L = k.size(1), self.L
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        self.new_k.append(k[:, :, 0])
        self.new_v.append(v[:, :, 0])
        if self.kernel:  # one pass over each slot's keys and values (decode_attention.py)
            y = decode_attention.attend(
                q[:, :, 0].to(k.dtype),
                k[:, :, 0],
                v[:, :, 0],
                self.k[layer],
                self.v[layer],
                self.pos,
                D**-0.5,
            )
            return y[:, :, None].to(q.dtype)
        K, V = self.k[layer, :n, :L].transpose(1, 2), self.v[layer, :n, :L].transpose(1, 2)  # (n, G, L, D)
        qg = q.to(K.dtype).view(n, G, H // G, D) * D**-0.5  # queries grouped by their kv head
        cached = qg @ K.transpose(-1, -2)  # (n, G, H/G, L)
        seen = torch.arange(L, device=K.device)[None, :] < self.pos[:, None]  # (n, L)
        cached = cached.masked_fill(~seen[:, None, None, :], float("-inf"))
        own = (qg * k).sum(-1, keepdim=True)  # (n, G, H/G, 1): the query against its own key
        w = torch.softmax(torch.cat((cached, own), dim=-1), dim=-1)
        y = w[..., :L] @ V + w[..., L:] * v  # (n, G, H/G, D)
        return y.view(n, H, 1, D).to(q.dtype)

    def advance(self, n: int) -> None:
        pass  # the caller stores new_k/new_v and moves the lengths on


class PrefillView:
    """Several slots of a SlotKVCache, read-only, for one packed prefill inside a compiled
    graph (engine/prefill.py): the prompts sit one after another in one row, and each attends
    causally to its own tokens after what its slot already holds (a reused prefix).

    As DecodeView, it never writes the cache: the new keys/values are handed back (`new_k`,
    `new_v`) for SlotKVCache.store_prompts. k, v: the cache's storage; pos (T,): each
    token's position in its slot; slots, past, lens (S,): each prompt's slot, the tokens that
    slot holds, and the prompt's length. The attention is model/decode_attention.py's
    prefill op (CPU; loaded by the caller).
    """

    def __init__(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        pos: torch.Tensor,
        slots: torch.Tensor,
        past: torch.Tensor,
        lens: torch.Tensor,
    ) -> None:
        self.k, self.v, self.pos = k, v, pos
        self.slots, self.past, self.lens = slots, past, lens
        self.new_k: list[torch.Tensor] = []
        self.new_v: list[torch.Tensor] = []

    def positions(self, T: int) -> torch.Tensor:
        return self.pos

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)  # q (1, H, T, D); k, v (1, G, T, D)
        self.new_k.append(k[0].transpose(0, 1))  # (T, G, D): the cache's order
        self.new_v.append(v[0].transpose(0, 1))
        y = decode_attention.prefill_attend(
            q[0].to(k.dtype), k[0], v[0], self.k[layer], self.v[layer], self.slots, self.past, self.lens
        )
        return y[None].to(q.dtype)

    def advance(self, n: int) -> None:
        pass  # the caller stores new_k/new_v and moves the lengths on
