"""Throughput and cost figures for the training logs: tokens/s, MFU, peak memory, time to finish.

MFU = model FLOPs per token x tokens/s / peak FLOP/s, the PaLM paper's definition (Chowdhery
et al. 2022, appendix B), with the peak measured on this machine (`chatsmith bench peak`).
"""

from __future__ import annotations

import functools
import json
import time

import torch

from chatsmith.common.device import device_name, matmul_peak
from chatsmith.common.paths import home
from chatsmith.model.gpt import GPT


def flops_per_token(gpt: GPT, seq_len: int) -> float:
    """Training FLOPs per token: 6 per weight of every matmul (forward 2, backward 4) plus attention.

    The input embedding is a lookup, not a matmul, so it counts only when it doubles as the
    (tied) output head. Attention scores and values add 12 * layers * heads * head_dim * T
    (forward 4, backward 8), counted over the full T x T square as nanochat and PaLM do.
    """
    c = gpt.cfg
    matmul = sum(p.numel() for n, p in gpt.named_parameters() if p.dim() == 2 and n != "embed_tokens.weight")
    if c.tie_embeddings:
        matmul += gpt.embed_tokens.weight.numel()
    return 6.0 * matmul + 12.0 * c.n_layer * c.n_head * c.head_dim * seq_len


def _peak_file():
    return home() / "peak.json"


def store_peak(device: torch.device, dtype: torch.dtype, flops: float) -> None:
    path = _peak_file()
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[f"{device_name(device)} {dtype}"] = flops
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def stored_peak(device: torch.device, dtype: torch.dtype) -> float:
    """The peak `chatsmith bench peak` stored for this device and dtype (0 when none is)."""
    path = _peak_file()
    try:
        return (
            float(json.loads(path.read_text()).get(f"{device_name(device)} {dtype}", 0.0))
            if path.is_file()
            else 0.0
        )
    except (OSError, ValueError):
        return 0.0


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The stored peak for this device and dtype, else a quick measurement."""
    return stored_peak(device, dtype) or _quick_peak(str(device), dtype)


@functools.cache
def _quick_peak(device: str, dtype: torch.dtype) -> float:
    """A short measurement on a smaller matrix (it reads a little low; `bench peak` is the reference)."""
    dev = torch.device(device)
    return matmul_peak(dev, dtype, size=4096 if dev.type == "cuda" else 2048, seconds=0.5)


class Meter:
    """Per-step timing that leaves the first steps (compilation, warm-up) out of the averages."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak: float, skip: int = 2) -> None:
        self.tokens_per_step, self.fpt, self.peak, self.skip = tokens_per_step, flops_per_token, peak, skip
        self.n, self.total, self.t = 0, 0.0, time.perf_counter()

    def tick(self) -> dict[str, float]:
        """Call once per finished step; returns this step's tokens/s and MFU."""
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        self.n += 1
        if self.n > self.skip:
            self.total += dt
        tps = self.tokens_per_step / max(dt, 1e-9)
        return {"tok_per_s": tps, "mfu": tps * self.fpt / self.peak, "step_s": dt}

    def mean_step_s(self, last_dt: float) -> float:
        counted = self.n - self.skip
        return self.total / counted if counted > 0 else last_dt

    def restart(self) -> None:
        """After an evaluation or a checkpoint, so their time is not counted as training."""
        self.t = time.perf_counter()
