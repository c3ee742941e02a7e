"""The one training loop every stage uses; stages differ only in data and loss.

A stage hands in a model, a loader with `next_batch()` and `state_dict()`, a loss
function and an evaluation function; the loop does the schedule, clipping, logging,
validation, NaN checks and atomic checkpoints that hold everything needed to resume.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatsmith.checkpoint import save_checkpoint
from chatsmith.common.config import TrainConfig
from chatsmith.common.device import autocast
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import MetricsLog, info, progress
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.schedule import lr_multiplier


@dataclass
class Stage:
    name: str  # "pretrain", "sft", ...
    out_dir: Path  # the checkpoint folder this stage writes
    loader: Any  # next_batch() -> (x, y); state_dict()/load_state_dict()
    evaluate: Callable[[], dict[str, float]] | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with three groups, as nanochat: embeddings, lm_head, everything else.

    Each group's base rate is stored as `base_lr` so the schedule scales all alike.
    Weight decay applies to the block matrices only, never to norms or embeddings.
    """
    embed = [model.embed_tokens.weight]
    head = [] if model.cfg.tie_embeddings else [model.lm_head.weight]
    # A tied matrix is also the output head, which diverges at the embeddings' large rate.
    embed_lr = cfg.unembedding_lr if model.cfg.tie_embeddings else cfg.embedding_lr
    special = {id(p) for p in embed + head}
    matrices = [p for p in model.parameters() if id(p) not in special and p.dim() == 2]
    vectors = [p for p in model.parameters() if id(p) not in special and p.dim() != 2]
    groups = [
        {"params": embed, "base_lr": embed_lr, "weight_decay": 0.0},
        {"params": head, "base_lr": cfg.unembedding_lr, "weight_decay": 0.0},
        {"params": matrices, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": vectors, "base_lr": cfg.lr, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = g["base_lr"]
    return torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=device.type == "cuda")


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def train(
    model: GPT,
    tok: BPETokenizer,
    stage: Stage,
    cfg: TrainConfig,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    start_step: int = 0,
    optimizer_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train for cfg.steps steps; returns the final figures (also written to metrics)."""
    opt = make_optimizer(model, cfg, device)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    model.train()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    t_start, last = time.time(), {"train_loss": float("nan")}
    smooth = None
    steps = range(start_step, cfg.steps)
    for step in progress(steps, total=cfg.steps - start_step, desc=stage.name):
        mult = lr_multiplier(step, cfg.steps, cfg.warmup_steps, cfg.warmdown_frac, cfg.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * mult
        x, y = stage.loader.next_batch()
        x, y = x.to(device), y.to(device)
        t0 = time.time()
        with autocast(device, dtype):
            loss = model(x, y)
        loss_v = loss.item()
        if not math.isfinite(loss_v):
            raise ChatsmithError(
                f"{stage.name}: loss became {loss_v} at step {step}; the last good checkpoint is kept. "
                "Try a lower learning rate."
            )
        loss.backward()
        gnorm = (
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        )
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.time() - t0
        smooth = loss_v if smooth is None else 0.9 * smooth + 0.1 * loss_v
        row: dict[str, Any] = {
            "step": step + 1,
            "train_loss": loss_v,
            "lr": cfg.lr * mult,
            "tok_per_s": tokens_per_step / dt,
        }
        if gnorm is not None:
            row["grad_norm"] = float(gnorm)
        done = step + 1 == cfg.steps
        if stage.evaluate is not None and ((step + 1) % cfg.eval_every == 0 or done):
            model.eval()
            row.update(stage.evaluate())
            model.train()
        metrics.write(**row)
        last = row
        if (step + 1) % cfg.log_every == 0 or done:
            eta = (time.time() - t_start) / (step + 1 - start_step) * (cfg.steps - step - 1)
            val = f" val {row['val_loss']:.4f}" if "val_loss" in row else ""
            info(
                f"[{stage.name}] step {step + 1}/{cfg.steps} loss {smooth:.4f}{val} lr {cfg.lr * mult:.2e} "
                f"{row['tok_per_s']:.0f} tok/s eta {eta:.0f}s"
            )
        if done or (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0):
            meta = {
                "stage": stage.name,
                "step": step + 1,
                "total_steps": cfg.steps,
                "loader": stage.loader.state_dict(),
                "rng": {"torch": torch.get_rng_state().tolist()},
                "train_loss": loss_v,
                **stage.extra_meta,
            }
            if "val_loss" in row:
                meta["val_loss"] = row["val_loss"]
            save_checkpoint(stage.out_dir, model, tok, meta, opt.state_dict() if not done else None)
    model.eval()
    last["seconds"] = time.time() - t_start
    return last


@torch.no_grad()
def mean_loss(
    model: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device, dtype: torch.dtype
) -> float:
    """Token-weighted mean loss over fixed batches (targets of -1 do not count)."""
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, dtype):
            loss = model(x, y, reduction="sum")
        total += float(loss)
        count += int((y != -1).sum())
    return total / max(1, count)
