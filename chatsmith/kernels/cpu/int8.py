"""8-bit weights for CPU decoding: weight-only int8 with a scale per block of 32 (as Q8_0).

Decoding one sequence reads every weight once per token and does two flops per weight, so
on a CPU it waits on memory: int8 weights halve the bytes bf16 reads. Only the weights are
8-bit; the activations stay bf16 (or float32) and the products are summed in float32
(csrc/int8_matmul.cpp), so there is no activation quantization and no dependence on the
other rows of a batch.

Quantization is symmetric round-to-nearest in groups of 32 weights along K per output
channel (GGUF's Q8_0 blocks), q = round(w / s) in [-127, 127], s = max|w| / 127 rounded up
to a bf16 value: a model cast to bf16 after quantizing (the engine casts its model) keeps
the scales exactly, and rounding up never pushes a weight past 127. On SmolLM2-135M
(4,096 held-out tokens of stdlib docstrings, weights fake-quantized in float32) groups of
32 raised the perplexity by 0.09 %, one scale per channel by 0.86 %, and int8 activations
per row besides by 6 %: hence groups, and bf16 activations.

Chosen by measurement against what torch offers (SmolLM2-135M's projection shapes, a busy
2-core Xeon with AMX, one thread, best of 200, weights hot in cache), microseconds:

    rows                       1 (qkv, o, gate_up, down)   8                   32
    chatsmith bf16 kernel      16, 10, 118, 28             99, 52, 325, 170    358, 217, 1125, 532
    this kernel                32, 23, 90, 48              108, 59, 338, 162   360, 226, 1034, 573
    torch._weight_int8pack_mm  30, 18, 112, 44             125, 73, 411, 181   480, 288, 1611, 696

`torch._weight_int8pack_mm` (bf16 x, one scale per channel only) is as fast at one row and
1.2-1.4x slower at 8-32; torch.ao's dynamic quantized linear (fbgemm) quantizes the
activations per tensor, so a row's output would depend on the rows beside it. With the
weights in cache one row is bound by the widening (4 instructions per 16 products against
1 per 32 for bf16); in a decode step the weights come from memory, where int8 reads half
the bytes. At 32 rows oneDNN's bf16 AMX kernel (F.linear) took a third of either kernel's
time: many-row int8 calls would be faster dequantized into it (not done: a row's numbers
would then depend on the batch size). Where this kernel is not built (no AVX2/AVX-512) the
modules dequantize and call F.linear: slower, the same numbers up to summation order.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatsmith.kernels.cpu import build
from chatsmith.kernels.cpu.modules import FusedAttention, FusedMLP

GROUP = 32  # weights per scale along K, as GGUF's Q8_0 (the module docstring says why)



@functools.cache
def layout() -> tuple[int, int]:
    """The kernel's (floats per vector, columns per tile); (0, 0) where it is not built."""
    if not build.load():
        return 0, 0
    width, tile = torch.ops.chatsmith_cpu.int8_matmul_layout()
    return int(width), int(tile)


def quantize(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, K) -> (q int8 (N, K), scale float32 (N, K / g)): w ~ q * scale, one scale per row
    and g consecutive columns, g = group where it divides K, else K (one per row)."""
    w = w.detach().float()
    N, K = w.shape
    g = group if K % group == 0 else K
    s = w.view(N, K // g, g).abs().amax(-1) / 127
    b = s.to(torch.bfloat16)
    b = torch.where(b.float() < s, (b.view(torch.int16) + 1).view(torch.bfloat16), b)  # next bf16 up
    s = torch.where(s > 0, b.float(), 1.0)  # an all-zero group: any scale, q = 0
    q = torch.round(w.view(N, K // g, g) / s[..., None]).clamp_(-127, 127).to(torch.int8)
    return q.view(N, K), s


def pack(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, K) -> (packed int8, scales bf16) for `linear`: (N' / VS, K, VS) and (K / g, N'),
    N' = N rounded up to whole tiles with zero columns; where the kernel is not built,
    q (N, K) and the scales (N, K / g) as they are."""
    q, s = quantize(w, group)
    s = s.to(torch.bfloat16)  # exact (quantize)
    width, tile = layout() if w.device.type == "cpu" else (0, 0)
    if not width:
        return q, s
    pad = -q.size(0) % tile
    q, s = F.pad(q, (0, 0, 0, pad)), F.pad(s, (0, 0, 0, pad), value=1.0)
    return q.reshape(-1, width, q.size(1)).transpose(1, 2).contiguous(), s.t().contiguous()


def dequantize(packed: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
    """The float32 weight (n, K) that `linear` multiplies by: q * scale."""
    if packed.dim() == 3:  # the kernel's packing: back to (N', K) and (N', K / g)
        packed, scale = packed.transpose(1, 2).reshape(-1, packed.size(1)), scale.t()
    q, s = packed[:n].float(), scale[:n].float()
    return (q.view(n, s.size(1), -1) * s[..., None]).view(n, -1)


def linear(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, n: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x (..., K) @ (q * scale).T (+ bias) -> (..., n) in x's dtype (autocast's, under it, as
    F.linear would)."""
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    if packed.dim() == 2 or x.device.type != "cpu" or x.dtype not in (torch.bfloat16, torch.float32):
        return F.linear(x, dequantize(packed, scale, n).to(x.dtype), bias)
    y = torch.ops.chatsmith_cpu.int8_matmul(x.reshape(-1, x.size(-1)), packed, scale, n)
    y = y.view(*x.shape[:-1], n)
    return y if bias is None else y + bias


class Int8Linear(nn.Linear):
    """nn.Linear that multiplies by an int8 copy of its weight (`quantize`); the weight itself
    stays (the state dict and tied embeddings are unchanged) but is no longer read."""

    q: torch.Tensor
    q_scale: torch.Tensor

    @torch.no_grad()
    def pack(self) -> None:
        q, s = pack(self.weight)
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("q_scale", s, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.q, self.q_scale, self.out_features, self.bias)


class Int8Attention(FusedAttention):
    """FusedAttention whose fused q/k/v projection is one int8 matmul."""

    qkv_q: torch.Tensor
    qkv_scale: torch.Tensor

    @torch.no_grad()
    def pack(self) -> None:
        q, s = pack(self.qkv_weight)
        self.register_buffer("qkv_q", q, persistent=False)
        self.register_buffer("qkv_scale", s, persistent=False)
        # The bf16 fused copy is no longer read: keep only the int8 one.
        self.qkv_weight, self.qkv_packed = self.qkv_weight.new_empty(0), None

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = (self.H + 2 * self.G) * self.D
        qkv = linear(x, self.qkv_q, self.qkv_scale, n, self.qkv_bias)
        q, k, v = qkv.split([self.H * self.D, self.G * self.D, self.G * self.D], dim=-1)
        return q, k, v


class Int8MLP(FusedMLP):
    """FusedMLP whose fused gate/up projection is one int8 matmul (down_proj an Int8Linear)."""

    gate_up_q: torch.Tensor
    gate_up_scale: torch.Tensor

    @torch.no_grad()
    def pack(self) -> None:
        q, s = pack(self.gate_up)
        self.register_buffer("gate_up_q", q, persistent=False)
        self.register_buffer("gate_up_scale", s, persistent=False)
        self.gate_up, self.gate_up_packed = self.gate_up.new_empty(0), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = 2 * self.gate_proj.out_features
        gate, up = linear(x, self.gate_up_q, self.gate_up_scale, n).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
