"""The C++ attention ops of the engine's compiled graphs on CPUs, and their shapes for tracing.

With many sequences decoding at once, attention is the largest part of a compiled decode
step after the matmuls: each sequence reads its own cached keys and values, so the work
grows with the batch times the context and is not a matmul that oneDNN could take. What
inductor generates for it makes five passes over (sequences, heads, positions): scores,
mask, max, exponentials, weighted values, with bf16 rounding in between. `decode_attention`
(csrc/decode_attention.cpp) makes one: per sequence it reads its cached keys and values in
order, each position's row of all heads before the next position's (the cache keeps a
position's keys of all heads together, model/kv_cache.py), so a sequence's keys and then
its values stream front to back as the hardware prefetcher likes best; it keeps the scores
in float32 and sums 16 dot products at a time in one transposing tree on AVX-512. On CPUs
with AVX512-BF16 a bf16 cache is scored straight from bf16 (vdpbf16ps), without widening
each key row first. Inside a decode step the weights have pushed the cache out of L3 since
the last step, so the kernel waits on memory (4 MB of keys and values per layer on the demo
model's shape: 32 sequences, 8 heads of 32, 128 cached tokens, bf16). Against reading head
by head in blocks of 16 positions with rows fetched 64 KB ahead (the order before), a
32-sequence step of the demo model took 5-10 % less at 128 cached tokens and about 30 %
less at 480 (4.9 against 7.2 ms); one sequence's step took the same. The float32 loop
(float32 caches, or bf16 ones on CPUs without AVX512-BF16) took the same to 18 % less.

`prefill_attention` is the attention of a packed prefill (several whole prompts in one row,
engine/prefill.py), one op for the compiled prefill graph: with a bf16 cache on AVX512-BF16
each token of a short prompt is a task of the decode kernel's loop, over its slot's reused
prefix and its prompt up to itself (half the time of an SDPA call per prompt on a burst of
32 prompts of 64 tokens); a long prompt, or any elsewhere, is one SDPA call (the .cpp has
the figures). `store_decoded` writes a step's new keys and values into the cache (one copy
per layer and sequence instead of indexing with two index tensors).

Call `build.load()` before any of them.
"""

from __future__ import annotations

import torch

HEAD_DIMS = (16, 32, 64, 128, 256)  # each compiled in, as a whole number of vectors


def supports(head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the attention ops take this head size and cache dtype."""
    return head_dim in HEAD_DIMS and dtype in (torch.float32, torch.bfloat16)


def decode_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q (n, H, D); the new k_new, v_new (n, G, D); one layer's cache k_cache, v_cache
    (slots, max_len, G, D); pos (n,) each sequence's cached length -> (n, H, D).

    Sequence b's query attends to its slot's positions < pos[b] and to its own new key,
    softmax(q·k * scale) in float32; all tensors in the cache's dtype."""
    return torch.ops.chatsmith_cpu.decode_attention(q, k_new, v_new, k_cache, v_cache, pos, scale)


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    past: torch.Tensor,
    lens: torch.Tensor,
) -> torch.Tensor:
    """The attention of a packed prefill: q (H, T, D), k, v (G, T, D) hold S prompts in a
    row, lens (S,) tokens each; prompt s attends causally to its own tokens after the first
    past[s] positions of slot slots[s] of one layer's cache (slots, max_len, G, D), which it
    only reads -> (H, T, D). One SDPA call per prompt, the loop in C++."""
    scale = q.size(-1) ** -0.5
    return torch.ops.chatsmith_cpu.prefill_attention(q, k, v, k_cache, v_cache, slots, past, lens, scale)


def store_decoded(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
) -> None:
    """Store one decode step's keys and values k, v (n_layer, n, G, D) into the caches
    (n_layer, slots, max_len, G, D), at position pos[b] of slot b."""
    torch.ops.chatsmith_cpu.store_decoded(k_cache, v_cache, k, v, pos)


def _fake(q: torch.Tensor, *args: object) -> torch.Tensor:
    """An attention op's output for tracing: shaped and typed like q."""
    return q.new_empty(q.shape)


def _fake_matmul(x: torch.Tensor, packed: torch.Tensor, n: int) -> torch.Tensor:
    """bf16_matmul's output for tracing: (M, n) like x."""
    return x.new_empty((x.size(0), n))


def _fake_f32_matmul(x: torch.Tensor, packed: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """f32_matmul's output for tracing: (M, N) like x."""
    return x.new_empty((x.size(0), w.size(0)))


def _fake_int8_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
    """int8_matmul's output for tracing: (M, n) like x."""
    return x.new_empty((x.size(0), n))


def register_fakes() -> None:
    """Tell torch.compile the ops' output shapes (once the extension is loaded)."""
    torch.library.register_fake("chatsmith_cpu::decode_attention")(_fake)
    torch.library.register_fake("chatsmith_cpu::prefill_attention")(_fake)
    torch.library.register_fake("chatsmith_cpu::bf16_matmul")(_fake_matmul)
    torch.library.register_fake("chatsmith_cpu::f32_matmul")(_fake_f32_matmul)
    torch.library.register_fake("chatsmith_cpu::int8_matmul")(_fake_int8_matmul)
