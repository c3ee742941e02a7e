"""Gradient (activation) checkpointing, switched in from outside like LoRA and the kernels.

Each block's class becomes `CheckpointedBlock`, which keeps only the block's input during
the forward pass and recomputes its inside in the backward pass (Chen et al. 2016,
"Training Deep Nets with Sublinear Memory Cost"): roughly a third more compute for
activation memory that no longer grows with depth. Parameters and names are unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from chatsmith.model.attention import AttnMeta
from chatsmith.model.gpt import GPT, Block


class CheckpointedBlock(Block):
    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttnMeta | None
    ) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return checkpoint(super().forward, x, cos, sin, meta, use_reentrant=False)
        return super().forward(x, cos, sin, meta)


def enable_checkpointing(model: GPT) -> None:
    for block in model.layers:
        if not isinstance(block, CheckpointedBlock):
            block.__class__ = CheckpointedBlock
