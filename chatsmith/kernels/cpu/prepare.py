"""Converting a built model for CPU serving or training, from outside (as torchtitan's
converters do): the model is built plain, then its modules are swapped for modules.py's.

Each swap changes a module's class in place to a subclass that only adds buffers, so
parameters, tied weights, the state dict and any wrapper holding the module stay as they
are. Converting twice is harmless: fused copies are taken again from the current weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from chatsmith.kernels.cpu import build, ops
from chatsmith.kernels.cpu.modules import CPUAttend, FusedAttention, FusedMLP, PackedLinear
from chatsmith.model.gpt import GPT


def _swap(module: nn.Module, cls: type[nn.Module]) -> None:
    if not isinstance(module, cls):
        module.__class__ = cls


def _cpu_attend(model: GPT) -> list[CPUAttend]:
    """Each layer's attention as a CPUAttend (both of its kernels off until switched on)."""
    out = []
    for block in model.layers:
        a = block.self_attn.attend
        if not isinstance(a, CPUAttend):
            a = block.self_attn.attend = CPUAttend(a.layer)
        out.append(a)
    return out


def fuse_projections(model: GPT) -> None:
    """q/k/v and gate/up each become one matmul over a copied, concatenated weight (fewer,
    larger matmuls: a quarter off a demo-sized decode step on a CPU)."""
    for block in model.layers:
        _swap(block.self_attn, FusedAttention)
        _swap(block.mlp, FusedMLP)
        block.self_attn.fuse()
        block.mlp.fuse()


def pack_matmuls(model: GPT) -> None:
    """After fuse_projections: every matmul of the forward pass keeps a copy of its weight
    packed for matmul.py's kernels: bf16 weights on CPUs with AVX512-BF16, float32 ones on
    CPUs with AVX2 or AVX-512; elsewhere (no copy made) F.linear as before."""
    for block in model.layers:
        for m in (block.self_attn.o_proj, block.mlp.down_proj):
            _swap(m, PackedLinear)
            m.pack()
        block.self_attn.pack()
        block.mlp.pack()
    _swap(model.lm_head, PackedLinear)
    model.lm_head.pack()


def prepare_serving(model: GPT, freeze: bool, kv_dtype: torch.dtype) -> bool:
    """For the engine's compiled steps over a cache of kv_dtype: with `freeze` (a model that
    no longer changes), fuse and pack the projections; on CPUs, switch in the C++ cached
    attention where it takes the head size and dtype. Whether that attention is in."""
    if freeze:
        fuse_projections(model)  # any device: fewer, larger matmuls
        pack_matmuls(model)  # CPU tensors only
    device = model.embed_tokens.weight.device
    ok = device.type == "cpu" and ops.supports(model.cfg.head_dim, kv_dtype) and build.load()
    if ok or any(isinstance(b.self_attn.attend, CPUAttend) for b in model.layers):
        for a in _cpu_attend(model):
            a.cpp = ok
    return ok


def prepare_training(model: GPT) -> bool:
    """For training on a CPU: switch in the row-at-a-time bf16 attention (and float32 SDPA
    for bf16 queries). Whether it is in."""
    if model.embed_tokens.weight.device.type != "cpu":
        return False
    for a in _cpu_attend(model):
        a.rows = True
    return True
