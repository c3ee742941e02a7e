"""Rotary position embeddings (Su et al. 2021), in the half-split layout Hugging Face uses."""

from __future__ import annotations

import torch


def rope_tables(n_pos: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (n_pos, head_dim), float32; each half repeats the
    other, so applying them is two multiplies and an add (as Hugging Face's)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    t = torch.arange(n_pos, dtype=torch.int64).float()
    freqs = torch.outer(t, inv_freq)  # (n_pos, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n_pos, D)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D); rotate the pairs (x[i], x[i + D/2]) — HF's rotate_half convention."""
    d = x.size(-1) // 2
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rotated = torch.cat((-x[..., d:], x[..., :d]), dim=-1)
    return x * cos + rotated * sin
