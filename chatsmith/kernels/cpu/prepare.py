"""Converting a built model for CPU serving or training, from outside (as torchtitan's
converters do): the model is built plain, then its modules are swapped for modules.py's.

Each swap changes a module's class in place to a subclass that only adds buffers, so
parameters, tied weights, the state dict and any wrapper holding the module stay as they
are. Converting twice is harmless: fused copies are taken again from the current weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from chatsmith.kernels.cpu import build, int8, ops
from chatsmith.kernels.cpu.modules import CPUAttend, FusedAttention, FusedMLP, PackedLinear
from chatsmith.model.gpt import GPT


def _swap(module: nn.Module, cls: type[nn.Module]) -> None:
    # Exactly cls: an int8 module (a subclass) asked to be packed in bf16 becomes bf16 again.
    if type(module) is not cls:
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


def int8_weights(model: GPT) -> None:
    """Every matmul of the forward pass, lm_head included, multiplies by an int8 copy of its
    weight (int8.py), q/k/v and gate/up fused first. The model's own weights stay."""
    for block in model.layers:
        a, mlp = block.self_attn, block.mlp
        _swap(a, int8.Int8Attention)
        _swap(mlp, int8.Int8MLP)
        _swap(a.o_proj, int8.Int8Linear)
        _swap(mlp.down_proj, int8.Int8Linear)
        a.fuse()
        mlp.fuse()
        for m in (a, mlp, a.o_proj, mlp.down_proj):
            m.pack()
    _swap(model.lm_head, int8.Int8Linear)
    model.lm_head.pack()


def weights_of(model: GPT) -> str:
    """"int8" once int8_weights converted the model, else "bf16" (its own weights)."""
    return "int8" if isinstance(model.lm_head, int8.Int8Linear) else "bf16"


def set_weights(model: GPT, weights: str) -> bool:
    """"int8": convert the model (again, from its current weights); "bf16": leave it as it
    is. Whether it has int8 weights now."""
    if weights == "int8":
        int8_weights(model)
    return weights_of(model) == "int8"


def prepare_serving(model: GPT, freeze: bool, kv_dtype: torch.dtype, weights: str | None = None) -> bool:
    """For the engine's compiled steps over a cache of kv_dtype: with `freeze` (a model that
    no longer changes), fuse and pack the projections, or with int8 weights (asked for
    here, or given to the model before) quantize them again from the current weights; on
    CPUs, switch in the C++ cached attention where it takes the head size and dtype.
    Whether that attention is in."""
    if weights == "int8" or (weights is None and weights_of(model) == "int8"):
        int8_weights(model)  # a snapshot of the weights by nature: frozen or not
    elif freeze:
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
