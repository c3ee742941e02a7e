"""The one training loop every stage uses; stages differ only in data and loss.

A stage hands in a model, a loader with `next_batch()` and `state_dict()`, an evaluation
function and optionally its own step (`step_fn`, e.g. a preference loss); the loop does the
schedule, gradient accumulation, mixed precision, compile, DDP/FSDP2, clipping, logging of
throughput and MFU, validation, NaN checks and atomic checkpoints that resume exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatsmith import kernels
from chatsmith.checkpoint import (
    load_optimizer_state,
    load_train_state,
    load_weights,
    resume_point,
)
from chatsmith.common.config import TrainConfig
from chatsmith.common.device import autocast, peak_memory_gb
from chatsmith.common.dist import all_reduce_mean, barrier, dist_info, init_distributed
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import MetricsLog, info, progress
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train import lora
from chatsmith.train import parallel as par
from chatsmith.train.checkpointing import enable_checkpointing
from chatsmith.train.optim import find_gpt, make_optimizer, muon_momentum
from chatsmith.train.schedule import lr_multiplier
from chatsmith.train.speed import Meter, flops_per_token, peak_flops

# A custom step: (the model as the loop calls it — possibly DDP/FSDP-wrapped — and one batch as
# loader.next_batch() returns it) -> (the loss to backpropagate, extra metrics to log). It runs
# under autocast and moves the batch to the device itself.
StepFn = Callable[[Any, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Stage:
    name: str  # "pretrain", "sft", ...
    out_dir: Path | None  # the checkpoint folder this stage writes (None: none, as in benchmarks)
    # next_batch() -> (x, y) or a stage's own batch; state_dict()/load_state_dict(); and, for
    # `epochs`, rows_per_epoch (rows in one pass, all ranks together) and rows_per_batch (per rank).
    loader: Any
    evaluate: Callable[[], dict[str, float]] | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)
    # Optional custom step; None keeps the plain next-token loss model(x, y).
    step_fn: StepFn | None = None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def grad_accum_steps(cfg: TrainConfig, world: int) -> int:
    """Micro-steps per optimizer step so that one step sees cfg.total_batch_tokens tokens."""
    per_pass = cfg.batch_size * cfg.seq_len * world
    if cfg.total_batch_tokens <= 0:
        return 1
    if cfg.total_batch_tokens % per_pass:
        raise ChatsmithError(
            f"total_batch_tokens ({cfg.total_batch_tokens}) must be a multiple of batch_size x seq_len x "
            f"ranks = {cfg.batch_size} x {cfg.seq_len} x {world} = {per_pass}; change one of them"
        )
    return cfg.total_batch_tokens // per_pass


def steps_from_epochs(name: str, cfg: TrainConfig, loader: Any, world: int) -> None:
    """With cfg.epochs > 0, set cfg.steps to cover that many passes over the loader's rows.

    The one place every stage's steps come from its data: a step reads rows_per_batch rows on
    each rank for each micro-step, so ceil(epochs x rows / that) steps see every row (once, for
    one epoch, when the rows divide evenly; else the last step reads into the next pass).
    """
    if cfg.epochs <= 0:
        return
    n, per_rank = getattr(loader, "rows_per_epoch", None), getattr(loader, "rows_per_batch", None)
    if not n or not per_rank:
        raise ChatsmithError(f"{name}: its data does not count its rows; set {name}.steps instead of epochs")
    accum = grad_accum_steps(cfg, world)
    per_step = per_rank * world * accum
    cfg.steps = max(1, math.ceil(cfg.epochs * n / per_step))
    over = cfg.steps * per_step - round(cfg.epochs * n)
    info(
        f"[{name}] {cfg.epochs:g} epoch(s) of {n} rows, {per_step} rows per step ({per_rank} x {world} "
        f"rank(s) x {accum} micro-step(s)): {cfg.steps} steps"
        + (f"; the last reads {over} row(s) of the next pass" if over else "")
    )


def _resume_from(resume: str | Path | None, out_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    if resume is None or resume == "":
        return None
    path = Path(out_dir if resume == "auto" else resume)
    meta = resume_point(path)
    if meta is None:
        if resume == "auto":
            return None  # nothing there yet: start from scratch
        raise ChatsmithError(
            f"cannot resume from {path}: no checkpoint with optimizer and train state there; "
            "pass a stage's checkpoint folder or --resume auto"
        )
    return path, meta


def train(
    model: torch.nn.Module,
    tok: BPETokenizer,
    stage: Stage,
    cfg: TrainConfig,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    start_step: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    resume: str | Path | None = None,
    parallel: str = "auto",
) -> dict[str, Any]:
    """Train for cfg.steps optimizer steps (or cfg.epochs passes over the loader's rows); returns
    the final figures (also written to metrics).

    `resume` is None (start fresh), "auto" (continue the checkpoint in stage.out_dir if it is
    unfinished) or a checkpoint folder.
    """
    di = init_distributed(device)
    steps_from_epochs(stage.name, cfg, stage.loader, di.world_size)
    gpt = find_gpt(model)
    kernels.prepare(gpt, "train")  # the CPU training attention of chatsmith.kernels, where it applies
    if cfg.gradient_checkpointing:
        enable_checkpointing(gpt)
    train_state: dict[str, Any] | None = None
    found = _resume_from(resume, stage.out_dir) if stage.out_dir is not None else None
    if found is not None:
        path, meta = found
        if not lora.load_stage_weights(path, gpt):  # a LoRA stage resumes its adapter only
            load_weights(path, gpt)
        if meta["step"] >= cfg.steps:
            info(f"[{stage.name}] {path} already finished {meta['step']} steps; nothing to resume")
            model.eval()
            return {k: v for k, v in meta.items() if isinstance(v, (int, float))}
        start_step, optimizer_state, train_state = _restore(path, meta, model, stage)

    mode = par.pick_parallel(parallel, model)
    compiled = par.want_compile(cfg.compile, device)
    wrapped = par.wrap_model(model, device, mode, compiled)
    opt = make_optimizer(model, cfg, device, dtype)
    if optimizer_state is not None:
        par.load_optimizer_state(model, opt, optimizer_state, mode)
    if train_state is not None:
        set_rng_state(train_state["rng"][di.rank % len(train_state["rng"])])

    run = _Run(stage, cfg, device, dtype, metrics, model, tok, wrapped, opt, mode)
    info(
        f"[{stage.name}] {cfg.steps} steps, {cfg.optimizer}, {di.world_size} rank(s) ({mode}), "
        f"{run.accum} micro-step(s) of "
        f"{cfg.batch_size}x{cfg.seq_len} per step = {run.tokens_per_step} tokens, dtype "
        f"{str(dtype).replace('torch.', '')}, compile {'on' if compiled else 'off'}"
    )
    return run.loop(start_step)


def _restore(
    path: Path, meta: dict[str, Any], model: torch.nn.Module, stage: Stage
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Put an unfinished run's extra modules and loader back; -> (step, optimizer state, train state)."""
    train_state = load_train_state(path)
    if train_state.get("model") is not None:  # a stage's extra modules beyond the GPT
        model.load_state_dict(train_state["model"])
    optimizer_state = load_optimizer_state(path)
    start_step = int(meta["step"])
    stage.loader.load_state_dict(meta["loader"])
    info(f"[{stage.name}] resuming from {path} at step {start_step}")
    return start_step, optimizer_state, train_state


class _Run:
    """One stage's steps once the model is wrapped and the optimizer built: each step is the
    learning rate, the micro-steps, the update, then evaluation, logging and checkpoints."""

    def __init__(
        self,
        stage: Stage,
        cfg: TrainConfig,
        device: torch.device,
        dtype: torch.dtype,
        metrics: MetricsLog,
        model: torch.nn.Module,
        tok: BPETokenizer,
        wrapped: torch.nn.Module,
        opt: Any,
        mode: str,
    ) -> None:
        self.stage, self.cfg, self.device, self.dtype, self.metrics = stage, cfg, device, dtype, metrics
        self.model, self.gpt, self.tok, self.wrapped, self.opt, self.mode = (
            model, find_gpt(model), tok, wrapped, opt, mode
        )
        world = dist_info().world_size
        self.accum = grad_accum_steps(cfg, world)
        self.tokens_per_step = cfg.batch_size * cfg.seq_len * self.accum * world
        self.peak = peak_flops(device, dtype) * world
        self.meter = Meter(self.tokens_per_step, flops_per_token(self.gpt, cfg.seq_len), self.peak)

    def loop(self, start_step: int) -> dict[str, Any]:
        """Steps start_step .. cfg.steps; returns the last step's figures and the run's averages."""
        cfg = self.cfg
        self.wrapped.train()
        last: dict[str, Any] = {"train_loss": float("nan")}
        smooth, seconds = None, 0.0
        steps = range(start_step, cfg.steps)
        for step in progress(steps, total=cfg.steps - start_step, desc=self.stage.name):
            row, speed = self.update(step)
            loss_v = row["train_loss"]
            smooth = loss_v if smooth is None else 0.9 * smooth + 0.1 * loss_v
            self.finish(step, row, speed, smooth)
            seconds += speed["step_s"]
            last = row
        self.model.eval()
        last = {k: v for k, v in last.items() if k not in ("eta_s", "step_s")}
        last["seconds"] = seconds
        # Averages over the steps after the first ones (compilation, warm-up), for benchmarks.
        mean_s = self.meter.mean_step_s(seconds / max(1, cfg.steps - start_step))
        last["mean_tok_per_s"] = self.tokens_per_step / mean_s
        last["mean_mfu"] = last["mean_tok_per_s"] * self.meter.fpt / self.peak
        return last

    def set_lr(self, step: int) -> float:
        """The schedule's multiplier for this step, applied to every group (and Muon's momentum)."""
        cfg = self.cfg
        mult = lr_multiplier(step, cfg.steps, cfg.warmup_steps, cfg.warmdown_frac, cfg.min_lr_frac)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * mult
            if g.get("muon"):
                g["momentum"] = muon_momentum(step, cfg)
        return mult

    def micro_steps(self) -> tuple[float, dict[str, float]]:
        """Forward and backward over `accum` batches; -> (mean loss over micro-steps and ranks, extras)."""
        device, wrapped, accum, step_fn = self.device, self.wrapped, self.accum, self.stage.step_fn
        loss_sum = torch.zeros((), device=device)
        extra_sum: dict[str, float] = {}
        for micro in range(accum):
            batch = self.stage.loader.next_batch()
            with par.micro_step_sync(wrapped, micro == accum - 1), autocast(device, self.dtype):
                if step_fn is None:
                    x, y = batch
                    loss = wrapped(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                    extra: dict[str, float] = {}
                else:
                    loss, extra = step_fn(wrapped, batch)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
            for k, v in extra.items():
                extra_sum[k] = extra_sum.get(k, 0.0) + float(v) / accum
        # The global mean over micro-steps and ranks, so the figure does not depend on the split.
        return all_reduce_mean(loss_sum).item() / accum, extra_sum

    def update(self, step: int) -> tuple[dict[str, Any], dict[str, float]]:
        """One optimizer step; -> (its metrics row, its speed figures)."""
        cfg, stage = self.cfg, self.stage
        mult = self.set_lr(step)
        loss_v, extra_sum = self.micro_steps()
        if not math.isfinite(loss_v):
            raise ChatsmithError(
                f"{stage.name}: loss became {loss_v} at step {step + 1}; the run stopped before updating the "
                f"weights and the last good checkpoint in {stage.out_dir} is kept. Try a lower learning rate "
                "(or resume from that checkpoint with --resume auto)."
            )
        gnorm = None
        if cfg.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        speed = self.meter.tick()
        row: dict[str, Any] = {"step": step + 1, "train_loss": loss_v, "lr": cfg.lr * mult}
        row.update(**speed, **extra_sum)
        if gnorm is not None:
            row["grad_norm"] = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
        return row, speed

    def finish(self, step: int, row: dict[str, Any], speed: dict[str, float], smooth: float) -> None:
        """After the update: evaluate, log, write the metrics row and save when it is time."""
        cfg, stage = self.cfg, self.stage
        done = step + 1 == cfg.steps
        evaluated = stage.evaluate is not None and ((step + 1) % cfg.eval_every == 0 or done)
        if evaluated:
            self.wrapped.eval()
            row.update(stage.evaluate())
            self.wrapped.train()
        eta = self.meter.mean_step_s(speed["step_s"]) * (cfg.steps - step - 1)
        row["eta_s"] = eta
        if (step + 1) % cfg.log_every == 0 or done:
            row["mem_gb"] = peak_memory_gb(self.device)
            val = f" val {row['val_loss']:.4f}" if "val_loss" in row else ""
            info(
                f"[{stage.name}] step {step + 1}/{cfg.steps} loss {smooth:.4f}{val} lr {row['lr']:.2e} "
                f"{speed['tok_per_s']:.0f} tok/s mfu {100 * speed['mfu']:.1f}% mem {row['mem_gb']:.2f}GB "
                f"eta {eta:.0f}s"
            )
        self.metrics.write(**row)
        saved = stage.out_dir is not None and (done or (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0))
        if saved:
            model, opt = self.model, self.opt
            _save(stage, model, self.gpt, self.tok, opt, self.mode, step + 1, cfg.steps, row, final=done)
        if evaluated or saved:  # their time is not training time
            self.meter.restart()


def _save(
    stage: Stage,
    model: torch.nn.Module,
    gpt: GPT,
    tok: BPETokenizer,
    opt: Any,
    mode: str,
    step: int,
    total: int,
    row: dict[str, Any],
    final: bool,
) -> None:
    """Every rank takes part (gathering shards, RNG states); rank 0 writes."""
    state = par.full_model_state(gpt, mode)
    opt_state = None if final else par.optimizer_state(model, opt, mode)
    rngs = par.gather_objects(rng_state())
    if dist_info().is_main:
        meta = {
            "stage": stage.name,
            "step": step,
            "total_steps": total,
            "loader": stage.loader.state_dict(),
            "train_loss": row["train_loss"],
            **stage.extra_meta,
        }
        if "val_loss" in row:
            meta["val_loss"] = row["val_loss"]
        extra_model = None if model is gpt else par.full_model_state(model, "none")
        train_state = None if final else {"rng": rngs, "model": extra_model}
        lora.save_stage(stage.out_dir, gpt, tok, meta, opt_state, train_state, state)
    barrier()


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype,
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
