"""chatsmith's own matmuls for serving on CPUs: bf16 with AVX512-BF16 or AMX, float32 at few rows.

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

so it serves every size, prompts included. On CPUs with AMX the same packed weight goes
through the tile unit instead (csrc/amx_matmul.cpp), at every row count for every K in
steps of 32, so a row's numbers never depend on the batch. SmolLM2-135M's matmuls of one
decode step, 2 Xeon cores (AMX-BF16):

    rows                 1         8         32
    vdpbf16ps (above)    2.6 ms    10.0 ms   38.5 ms
    oneDNN, prepacked    4.7 ms    4.9 ms    6.6 ms
    AMX tiles            2.7 ms    2.9 ms    4.9 ms

In float32 (what `auto` picks on CPUs without
native bf16) a second kernel, AVX2 or AVX-512 by the build, takes the calls of one row
(batch-1 decoding) and leaves the rest to oneDNN, whose blocking wins at more rows (at 32
rows this kernel took 2800 us for a demo step's 17 calls, MKL 2000). At one row: 215 us
against 476 for MKL's packed sgemm on AVX-512; built for AVX2 only, 205 us.
Packing copies the weight (a packed model holds its projection weights twice) and
the copy does not follow later changes, so only a model that no longer changes is packed:
by prepare.py's serving conversion, for a frozen decode step (engine/decode.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from chatsmith.kernels.cpu import build

TILE = 64  # output columns per bf16 kernel tile (4 blocks of 16): a packed weight has whole tiles


def available() -> bool:
    """Whether this machine's build of the CPU kernels has the bf16 matmul (builds them once)."""
    return build.load() and bool(torch.ops.chatsmith_cpu.bf16_matmul_built())


@functools.cache
def f32_layout() -> tuple[int, int]:
    """The float32 kernel's (floats per vector, columns per tile); (0, 0) where it is not
    built (no AVX2 or AVX-512, or no kernels at all)."""
    if not build.load():
        return 0, 0
    width, tile = torch.ops.chatsmith_cpu.f32_matmul_layout()
    return int(width), int(tile)


def pack(w: torch.Tensor) -> torch.Tensor | None:
    """w (N, K) -> its copy packed for `linear`, or None where no kernel applies (not a CPU
    tensor, a dtype other than bf16 and float32, an odd K in bf16, or this CPU lacks the
    instructions), and `linear` then calls F.linear.

    bf16: (N' / 16, K / 2, 16, 2), N' = N rounded up to whole tiles with zeros; float32:
    (N' / VS, K, VS), VS floats to a vector."""
    if w.device.type != "cpu" or w.dim() != 2:
        return None
    N, K = w.shape
    w = w.detach()
    if w.dtype == torch.bfloat16 and K % 2 == 0 and available():
        padded = F.pad(w, (0, 0, 0, -N % TILE))  # zero rows of w: columns nobody reads
        return padded.reshape(-1, 16, K // 2, 2).transpose(1, 2).contiguous()
    if w.dtype == torch.float32 and (layout := f32_layout())[0]:
        width, tile = layout
        return F.pad(w, (0, 0, 0, -N % tile)).reshape(-1, width, K).transpose(1, 2).contiguous()
    return None


def _one_row(rows: int | torch.SymInt) -> bool:
    """Whether a float32 call is known to have one row: eager calls of one token, and the
    single-sequence decode graph, where torch specialises the batch of 1. In the batched
    graphs the count is symbolic (2 or more), so this is False there without adding a guard
    (a test like `rows <= 8` would add one, and a third graph). Those calls go to F.linear,
    which the frozen graph packs for oneDNN: called from inside our op instead, MKL's sgemm
    took 2-4x oneDNN's packed kernel at 32 rows."""
    return rows == 1


def linear(
    x: torch.Tensor, w: torch.Tensor, packed: torch.Tensor | None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """F.linear(x, w, bias), through the packed copy of w where there is one."""
    if packed is None or x.dtype != packed.dtype or x.device.type != "cpu":
        return F.linear(x, w, bias)
    x2 = x.reshape(-1, x.size(-1))
    if packed.dtype == torch.bfloat16:
        y = torch.ops.chatsmith_cpu.bf16_matmul(x2, packed, w.size(0))
    elif _one_row(x2.size(0)):
        y = torch.ops.chatsmith_cpu.f32_matmul(x2, packed, w)
    else:  # where the frozen graph packs w for oneDNN itself, which wins at these sizes
        return F.linear(x, w, bias)
    y = y.view(*x.shape[:-1], w.size(0))
    return y if bias is None else y + bias
