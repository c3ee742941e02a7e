"""chatsmith's optional fast paths, switched into a built model from outside.

The network (chatsmith.model) is plain PyTorch and never imports this package. The engine
and the trainer call `prepare` on a built model; it swaps modules (nn.Linear for a packed
one, Attention and MLP for fused subclasses, the attention entry for one that calls the
C++ ops) and leaves the model's parameters and state dict as they are. Today the kernels
are the CPU ones of kernels/cpu/: small-batch matmuls on packed weights, the attention of
the compiled decode and prefill graphs, and a bf16 training attention; elsewhere (CUDA)
the plain path runs.

One switch turns them all off: the environment variable CHATSMITH_KERNELS=0. Then
`prepare` changes nothing, the C++ extension is never built nor loaded, and everything
runs the plain PyTorch path (what CUDA runs).

8-bit weights are opt-in (`--weights int8` of serve, chat and bench generate): `set_weights`
gives a loaded model int8 copies of its projection weights (kernels/cpu/int8.py), and the
engine's later `prepare` keeps them.
"""

from __future__ import annotations

from typing import Literal

import torch

from chatsmith.common.log import warn
from chatsmith.kernels.switch import ENV, enabled
from chatsmith.model.gpt import GPT

__all__ = ["ENV", "WEIGHTS", "enabled", "prepare", "set_weights"]

WEIGHTS = ("bf16", "int8")  # the choices of --weights; bf16: the model's own weights


def prepare(
    model: GPT,
    use: Literal["serve", "train"],
    *,
    freeze: bool = True,
    kv_dtype: torch.dtype | None = None,
    weights: str | None = None,
) -> bool:
    """Prepare a built model for the engine's compiled steps ("serve": fused and packed
    projections when `freeze`, the C++ cached attention over a cache of kv_dtype) or for
    training ("train": the CPU training attention). Returns whether the kernels' attention
    is in; False (and nothing changed) with the kernels switched off. weights: "int8" for
    int8 weight copies (as set_weights), "bf16" for the model's own, None: as set before."""
    if not enabled():
        return False
    from chatsmith.kernels.cpu import prepare as cpu

    if use == "train":
        return cpu.prepare_training(model)
    return cpu.prepare_serving(model, freeze, kv_dtype or model.embed_tokens.weight.dtype, weights)


def set_weights(model: GPT, weights: str) -> bool:
    """Give a model on the CPU int8 copies of its projection weights ("int8"; see
    kernels/cpu/int8.py) or leave its own ("bf16"); call it after loading and before
    building an engine. Whether the model has int8 weights now: False, with a warning,
    where they cannot apply (the kernels switched off, a model not on the CPU)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "bf16":
        return False
    if not enabled() or model.embed_tokens.weight.device.type != "cpu":
        warn(f"--weights {weights} needs a model on the CPU and chatsmith's kernels on; keeping its weights")
        return False
    from chatsmith.kernels.cpu import prepare as cpu

    return cpu.set_weights(model, weights)
