"""`chatsmith bench train --preset X`: training throughput of a preset against a plain baseline.

Both sides are chatsmith's own loop on the preset's model and batch, fed random tokens (the
speed of a step does not depend on what the tokens say). chatsmith: the preset's settings
(bf16 autocast where the device has it, compile by its rule, Muon). Baseline: the same loop in
fp32, eager, AdamW. Each side runs in a fresh process, so compiled code, caches and peak memory
of one do not leak into the other. MFU is taken against the bf16 matmul peak (`bench peak`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from typing import Any

import numpy as np
import torch

from chatsmith.bench.peak import bench_peak
from chatsmith.common.config import Config, make_config
from chatsmith.common.device import peak_memory_gb, pick_device, pick_dtype, set_threads
from chatsmith.common.log import MetricsLog
from chatsmith.data.tokens.loaders import PretrainLoader
from chatsmith.engine.memory import add_threads_flag
from chatsmith.model.build import build_model, gpt_config
from chatsmith.train.loop import Stage, train
from chatsmith.train.speed import flops_per_token, peak_flops, stored_peak

BASELINE = ["--run.dtype=float32", "--pretrain.compile=off", "--pretrain.optimizer=adamw"]


def _measure(preset: str, overrides: list[str], steps: int, threads: int, queue: Any) -> None:
    """One side of the comparison, in its own process; puts its figures on `queue`."""
    set_threads(threads)
    cfg: Config = make_config(preset, overrides)
    tc = cfg.pretrain
    tc.steps, tc.warmup_steps, tc.eval_every, tc.log_every = steps, 1, 10**9, 10**9
    device = pick_device(cfg.run.device)
    dtype = pick_dtype(cfg.run.dtype, device)
    vocab = cfg.model.vocab_size or cfg.tokenizer.vocab_size
    model = build_model(gpt_config(cfg.model, vocab), device, seed=0)
    rows_per_step = max(tc.batch_size, tc.total_batch_tokens // tc.seq_len)
    n = (steps + 1) * rows_per_step * tc.seq_len + 1  # no row is seen twice
    tokens = np.random.default_rng(0).integers(0, vocab, size=n, dtype=np.int64).astype(np.uint32)
    stage = Stage("bench", None, PretrainLoader(tokens, tc.batch_size, tc.seq_len))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    last = train(model, None, stage, tc, device, dtype, MetricsLog(None, "bench"))  # type: ignore[arg-type]
    fpt = flops_per_token(model, tc.seq_len)
    queue.put(
        {
            "tok_per_s": last["mean_tok_per_s"],
            "mfu_bf16_peak": last["mean_tok_per_s"] * fpt / peak_flops(device, torch.bfloat16),
            "peak_mem_gb": peak_memory_gb(device),
            "dtype": str(dtype).replace("torch.", ""),
            "optimizer": tc.optimizer,
            "compile": tc.compile,
            "final_loss": last["train_loss"],
        }
    )


def _run(preset: str, overrides: list[str], steps: int, threads: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(preset, overrides, steps, threads, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"benchmark process failed (exit code {p.exitcode})")
    return q.get()


def bench_train(
    preset: str, steps: int, threads: int, overrides: list[str], baseline_steps: int = 0
) -> dict[str, Any]:
    threads = set_threads(threads)  # resolved once: both sides' processes run this many
    device = pick_device(make_config(preset, overrides).run.device)
    if stored_peak(device, torch.bfloat16) and stored_peak(device, torch.float32):
        peak = {
            k: stored_peak(device, d) / 1e12
            for k, d in (("fp32_tflops", torch.float32), ("bf16_tflops", torch.bfloat16))
        }
    else:  # measure now and store, for both sides to read
        peak = bench_peak(str(device), seconds=2.0)
    ours = _run(preset, overrides, steps, threads)
    base = _run(preset, [*overrides, *BASELINE], baseline_steps or steps, threads)
    return {
        "preset": preset,
        "steps": steps,
        "threads": threads,
        "chatsmith": ours,
        "baseline": base,
        "ratio_tok_per_s": ours["tok_per_s"] / base["tok_per_s"],
        "tok_per_s": ours["tok_per_s"],
        "mfu": ours["mfu_bf16_peak"],
        "peak_mem_gb": ours["peak_mem_gb"],
        "peak": peak,
    }


def bench_train_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="chatsmith bench train",
        description="training tokens/s and MFU of a preset against fp32 eager AdamW, in one run",
    )
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, default=20, help="steps per side; the first 2 are not timed")
    p.add_argument("--baseline-steps", type=int, default=0, help="steps of the baseline (0: as --steps)")
    add_threads_flag(p)
    p.add_argument("--set", action="append", default=[], help="a config override, e.g. pretrain.compile=on")
    args = p.parse_args(argv)
    overrides = [f"--{s.removeprefix('--')}" for s in args.set]
    r = bench_train(args.preset, args.steps, args.threads, overrides, args.baseline_steps)
    for name in ("chatsmith", "baseline"):
        f = r[name]
        print(
            f"{name:>10}: {f['tok_per_s']:.0f} tok/s, MFU {100 * f['mfu_bf16_peak']:.1f}% of the bf16 peak, "
            f"peak memory {f['peak_mem_gb']:.2f} GB ({f['dtype']}, {f['optimizer']}, compile {f['compile']})"
        )
    print(f"tokens/s x{r['ratio_tok_per_s']:.2f} against the baseline")
    print(json.dumps(r))
    return 0
