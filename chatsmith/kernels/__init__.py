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
"""

from __future__ import annotations

from typing import Literal

import torch

from chatsmith.kernels.switch import ENV, enabled
from chatsmith.model.gpt import GPT

__all__ = ["ENV", "enabled", "prepare"]


def prepare(
    model: GPT,
    use: Literal["serve", "train"],
    *,
    freeze: bool = True,
    kv_dtype: torch.dtype | None = None,
) -> bool:
    """Prepare a built model for the engine's compiled steps ("serve": fused and packed
    projections when `freeze`, the C++ cached attention over a cache of kv_dtype) or for
    training ("train": the CPU training attention). Returns whether the kernels' attention
    is in; False (and nothing changed) with the kernels switched off."""
    if not enabled():
        return False
    from chatsmith.kernels.cpu import prepare as cpu

    if use == "train":
        return cpu.prepare_training(model)
    return cpu.prepare_serving(model, freeze, kv_dtype or model.embed_tokens.weight.dtype)
