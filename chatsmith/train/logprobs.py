"""Log-probabilities of target tokens under a model's logits: the one helper DPO and RL share.

Targets of -1 are not scored (prompts, padding, tool results): they read as token 0 and
their log-probability is zeroed where a sum is taken. The softmax runs in float32 so that
bf16 logits do not round small differences between policy and reference away.
"""

from __future__ import annotations

import torch


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p of each target token: logits (N, T, V), targets (N, T) with -1 = not scored -> (N, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's scored targets: logits (N, T, V), targets (N, T) -> (N,)."""
    return (token_logps(logits, targets) * (targets != -1)).sum(-1)
