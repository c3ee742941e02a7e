"""Learning-rate schedule: linear warmup, constant, linear warmdown (WSD).

Warmup-stable-decay keeps the peak rate for most of the run and decays at the end,
as nanochat and modded-nanogpt do; it needs no knowledge of the run length until the
decay starts, which suits short demo runs and resumed runs alike.
"""

from __future__ import annotations


def lr_multiplier(step: int, total: int, warmup: int, warmdown_frac: float, min_frac: float = 0.0) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_start = int(total * (1.0 - warmdown_frac))
    if step < decay_start or total <= decay_start:
        return 1.0
    progress = (step - decay_start) / max(1, total - decay_start)
    return max(min_frac, 1.0 - progress * (1.0 - min_frac))
