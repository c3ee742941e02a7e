"""chatsmith's own bf16 matmul for serving on CPUs with AVX512-BF16.

A decode step multiplies each weight by a handful of rows (one per running sequence). At
that size oneDNN, which ATen and inductor call for CPU matmuls, spends most of a call
choosing and setting up its kernel: on the demo model's shapes, 2 EPYC cores, one layer's
four projections took 72 us at one row where the arithmetic and the weights' reads need
about 16. csrc/small_matmul.cpp is one fixed kernel: the weight packed once, ahead, into
the order vdpbf16ps reads it (`pack`), 4 rows x 64 columns of float32 sums in registers,
threads over tiles of columns. Measured against oneDNN with its own prepacked weights
(p10, the demo's four projection shapes and its lm_head):

    rows      1          8          32         2048
    oneDNN    110 us     208 us     417 us     8.3 ms
    this      32 us      88 us      291 us     8.6 ms

so it serves every size, prompts included. Float32 (and CPUs without AVX512-BF16) keep
oneDNN. Packing copies the weight (a packed model holds its projection weights twice) and
the copy does not follow later changes, so only a model that no longer changes is packed:
GPT.pack_matmuls, called with fuse_projections by a frozen decode step (engine/decode.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chatsmith.model import decode_attention

TILE = 64  # output columns per kernel tile (4 blocks of 16): a packed weight has whole tiles


def available() -> bool:
    """Whether this machine's build of the CPU kernels has the bf16 matmul (builds them once)."""
    return decode_attention.load() and bool(torch.ops.chatsmith_cpu.bf16_matmul_built())


def pack(w: torch.Tensor) -> torch.Tensor | None:
    """w (N, K) -> its copy packed for `linear` as (N' / 16, K / 2, 16, 2), N' = N rounded up
    to whole tiles with zeros; None where the kernel does not apply (not a bf16 CPU tensor,
    an odd K, or no AVX512-BF16), and `linear` then calls F.linear."""
    if w.device.type != "cpu" or w.dtype != torch.bfloat16 or w.dim() != 2 or w.size(1) % 2:
        return None
    if not available():
        return None
    N, K = w.shape
    padded = F.pad(w.detach(), (0, 0, 0, -N % TILE))  # zero rows of w: columns nobody reads
    return padded.reshape(-1, 16, K // 2, 2).transpose(1, 2).contiguous()


def linear(
    x: torch.Tensor, w: torch.Tensor, packed: torch.Tensor | None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """F.linear(x, w, bias), through the packed copy of w where there is one."""
    if packed is None or x.dtype != torch.bfloat16 or x.device.type != "cpu":
        return F.linear(x, w, bias)
    y = torch.ops.chatsmith_cpu.bf16_matmul(x.reshape(-1, x.size(-1)), packed, w.size(0))
    y = y.view(*x.shape[:-1], w.size(0))
    return y if bias is None else y + bias
