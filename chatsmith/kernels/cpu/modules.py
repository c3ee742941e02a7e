"""The modules chatsmith's CPU kernels swap into a built model (prepare.py does the swapping).

Each is a subclass of the model's own module that adds only non-persistent buffers: a
converted module keeps its parameters and its state dict (checkpoints and exports do not
change), and torch.compile's freezing packs the buffers for the matmuls like the weights.
Their copies do not follow later changes to the weights, so only a model that no longer
changes is fused and packed.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatsmith.kernels.cpu import matmul, ops, train_attention
from chatsmith.model.attention import Attend, AttnMeta
from chatsmith.model.gpt import MLP, Attention


class PackedLinear(nn.Linear):
    """nn.Linear that multiplies through chatsmith's CPU matmuls (matmul.py) by a packed copy
    of its weight."""

    packed: torch.Tensor | None

    @torch.no_grad()
    def pack(self) -> None:
        self.register_buffer("packed", matmul.pack(self.weight), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return matmul.linear(x, self.weight, self.packed, self.bias)


class FusedAttention(Attention):
    """q, k and v in one matmul from a copy of their weights: fewer, larger matmuls (a
    quarter off a demo-sized decode step on a CPU), at the cost of that copy."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    qkv_packed: torch.Tensor | None

    @torch.no_grad()
    def fuse(self) -> None:
        p = (self.q_proj, self.k_proj, self.v_proj)
        self.register_buffer("qkv_weight", torch.cat([m.weight for m in p]), persistent=False)
        bias = torch.cat([m.bias for m in p]) if p[0].bias is not None else None
        self.register_buffer("qkv_bias", bias, persistent=False)
        self.register_buffer("qkv_packed", None, persistent=False)

    @torch.no_grad()
    def pack(self) -> None:
        self.qkv_packed = matmul.pack(self.qkv_weight)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qkv = matmul.linear(x, self.qkv_weight, self.qkv_packed, self.qkv_bias)
        q, k, v = qkv.split([self.H * self.D, self.G * self.D, self.G * self.D], dim=-1)
        return q, k, v


class FusedMLP(MLP):
    """gate and up in one matmul from a copy of their weights."""

    gate_up: torch.Tensor
    gate_up_packed: torch.Tensor | None

    @torch.no_grad()
    def fuse(self) -> None:
        gate_up = torch.cat([self.gate_proj.weight, self.up_proj.weight])
        self.register_buffer("gate_up", gate_up, persistent=False)
        self.register_buffer("gate_up_packed", None, persistent=False)

    @torch.no_grad()
    def pack(self) -> None:
        self.gate_up_packed = matmul.pack(self.gate_up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = matmul.linear(x, self.gate_up, self.gate_up_packed).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class CPUAttend(Attend):
    """The attention on CPUs with chatsmith's kernels: for training (`rows`), the bf16
    row-at-a-time attention of train_attention.py where it fits, else ATen's flash attention
    in float32; for serving (`cpp`), the C++ cached attention of ops.py. Off, each falls
    back to the plain attention."""

    def __init__(self, layer: int, rows: bool = False, cpp: bool = False) -> None:
        super().__init__(layer)
        self.rows, self.cpp = rows, cpp

    def causal(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.rows and train_attention.fits(q, k, v):
            # bf16 training: a backward in half the time of ATen's flash backward at small
            # head sizes (train_attention.py).
            return train_attention.causal_attention(q, k, v)
        if self.rows and q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # ATen's CPU flash attention is faster in float32 than in bf16 at small head sizes:
            # 27.9 against 32.4 ms per layer, forward and backward, at the demo's shape. Only
            # q without qk_norm arrives here in bf16 (under autocast the norm returns float32).
            y = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), is_causal=True, enable_gqa=q.size(1) != k.size(1)
            )
            return y.to(q.dtype)
        return super().causal(q, k, v)

    def cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        if not self.cpp or meta.k.device.type != "cpu":
            return super().cached(q, k, v, meta)
        k, v = k.to(meta.k.dtype), v.to(meta.v.dtype)
        meta.hand_back(k, v)
        layer, D = self.layer, q.size(-1)
        if meta.lens is None:  # one pass over each slot's keys and values, per new token
            q1, k1, v1 = q[:, :, 0].to(k.dtype), k[:, :, 0], v[:, :, 0]
            y = ops.decode_attention(q1, k1, v1, meta.k[layer], meta.v[layer], meta.past, D**-0.5)
            return y[:, :, None].to(q.dtype)
        y = ops.prefill_attention(
            q[0].to(k.dtype), k[0], v[0], meta.k[layer], meta.v[layer], meta.slots, meta.past, meta.lens
        )
        return y[None].to(q.dtype)
