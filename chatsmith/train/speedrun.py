"""The whole pipeline in one call: data, tokenizer, pretrain, sft, dpo, rm, rl, eval, report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chatsmith.common.config import Config, to_dict
from chatsmith.common.device import pick_device, pick_dtype, set_threads
from chatsmith.common.dist import (
    barrier,
    cleanup,
    dist_info,
    init_distributed,
    local_device,
    threads_per_rank,
)
from chatsmith.common.log import MetricsLog, info
from chatsmith.common.paths import run_dir
from chatsmith.eval.report import write_report
from chatsmith.eval.runner import evaluate_stages
from chatsmith.tasks import mixture as task_mixture
from chatsmith.tasks.demo import DemoData
from chatsmith.tasks.mixture import rl_problems
from chatsmith.tasks.preference_pairs import preference_pairs
from chatsmith.tasks.word_problems import word_problems
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.dpo import run_dpo
from chatsmith.train.pretrain import run_pretrain, run_tokenizer
from chatsmith.train.rl import run_rl
from chatsmith.train.rm import run_rm
from chatsmith.train.sft import run_sft

STAGES = ["base", "sft", "dpo", "rm", "rl"]


def setup(cfg: Config) -> tuple[torch.device, torch.dtype]:
    """Seed, threads, device and process group for this rank."""
    torch.manual_seed(cfg.run.seed)
    set_threads(cfg.run.threads or (threads_per_rank() if dist_info().enabled else 0))
    device = local_device(pick_device(cfg.run.device))
    init_distributed(device)
    return device, pick_dtype(cfg.run.dtype, device)


def tokens_dir(cfg: Config, out: Path) -> Path:
    """The token folder pretraining reads: data.tokens, or the demo's own in RUN/data."""
    return Path(cfg.data.tokens).expanduser() if cfg.data.tokens else out / "data"


def prepare_data(cfg: Config, out: Path, reuse: bool) -> tuple[BPETokenizer, dict[str, Any], DemoData | None]:
    """Corpus -> tokenizer -> token folder RUN/data (rank 0 builds them; the other ranks wait);
    with data.tokens, that folder and its tokenizer instead, and only the demo's conversations.

    With `reuse`, a tokenizer and shards already in `out` are kept (a resumed run).
    """
    if cfg.data.tokens:
        return _real_data(cfg, out)
    have = (out / "tokenizer" / "tokenizer.json").is_file() and (out / "data" / "manifest.json").is_file()
    data = None
    stages: dict[str, Any] = {"timings": {}}
    if dist_info().is_main and not (reuse and have):
        t = time.time()
        data = DemoData(cfg)
        stages["timings"]["data"] = time.time() - t
        info(
            f"[data] {len(data.docs)} stdlib documents ({sum(len(d) for d in data.docs) / 1e6:.1f}M chars), "
            f"{len(data.chat_train)} training conversations, {len(data.words)} words  "
            f"({stages['timings']['data']:.1f}s)"
        )
        t = time.time()
        tok = BPETokenizer.train(data.tokenizer_texts(), cfg.tokenizer.vocab_size)
        tok.save(out / "tokenizer" / "tokenizer.json")
        train = next(s for s in data.write_shards(tok, out / "data")["shards"] if s["split"] == "train")
        stages["timings"]["tokenizer"] = time.time() - t
        ntok = train["tokens"]
        bpt = train["bytes"] / max(1, ntok)
        stages["tokenizer"] = {"vocab": tok.vocab_size, "bytes/token": round(bpt, 3), "train tokens": ntok}
        info(
            f"[tokenizer] vocab {tok.vocab_size}, {ntok / 1e6:.2f}M training tokens, {bpt:.2f} bytes/token "
            f"({stages['timings']['tokenizer']:.1f}s)"
        )
    barrier()
    tok = BPETokenizer.load(out / "tokenizer" / "tokenizer.json")
    return tok, stages, data


def _real_data(cfg: Config, out: Path) -> tuple[BPETokenizer, dict[str, Any], DemoData | None]:
    """A token folder's run: its tokenizer becomes the run's; the conversations and the words of the
    spelling tasks are the demo's (built from the standard library, not from the folder)."""
    tok = run_tokenizer(tokens_dir(cfg, out), out)
    data = None
    if dist_info().is_main:
        data = DemoData(cfg)
        (out / "data").mkdir(parents=True, exist_ok=True)
        (out / "data" / "words.json").write_text(json.dumps(data.words))
    barrier()
    return tok, {"timings": {}}, data


def pretrain_only(cfg: Config, resume: str | None = None) -> Path:
    """`chatsmith pretrain`: on the token folder `data.tokens` (its tokenizer becomes the run's), or
    else on the demo's data and tokenizer, made first if the run has none yet; into RUN/base/."""
    device, dtype = setup(cfg)
    out = run_dir(cfg.run.name)
    out.mkdir(parents=True, exist_ok=True)
    info(f"chatsmith pretrain → {out}  (device {device}, dtype {str(dtype).replace('torch.', '')})")
    if cfg.data.tokens:
        tok = run_tokenizer(tokens_dir(cfg, out), out)
    else:
        tok, _, _ = prepare_data(cfg, out, reuse=True)
    metrics = MetricsLog(out / "metrics.jsonl", "pretrain")
    try:
        run_pretrain(cfg, tok, tokens_dir(cfg, out), out / "base", device, dtype, metrics, resume=resume)
    finally:
        cleanup()
    return out


def speedrun(cfg: Config, resume: str | None = None) -> Path:
    device, dtype = setup(cfg)
    out = _start_run(cfg, resume, device, dtype)
    tok, prep, data = prepare_data(cfg, out, reuse=resume is not None)
    stages: dict[str, Any] = {k: v for k, v in prep.items() if k != "timings"}
    run = _Pipeline(out, device, dtype, resume, stages, prep["timings"])
    if data is None:
        data = DemoData(cfg)  # the conversations and eval questions (the shards were reused or rank 0's)

    run.stage("pretrain", run_pretrain, cfg, tok, tokens_dir(cfg, out), out / "base", device, dtype)
    sft_train, sft_val = [e.messages for e in data.chat_train], [e.messages for e in data.chat_val]
    run.stage("sft", run_sft, cfg, out / "base", out / "sft", sft_train, sft_val, device, dtype)
    _preference_stages(run, cfg, data)
    _rl_stage(run, cfg, data)

    t = time.time()
    evals = evaluate_stages(out, [s for s in STAGES if s != "rm"], device, dtype)  # every rank takes a share
    run.timings["eval"] = time.time() - t
    if not dist_info().is_main:  # the report is one process's work
        cleanup()
        return out
    (out / "eval.json").write_text(json.dumps(evals, indent=1, ensure_ascii=False, default=str))
    _report(run, cfg, evals)
    cleanup()
    return out


def _start_run(cfg: Config, resume: str | None, device: torch.device, dtype: torch.dtype) -> Path:
    """The run's folder, with its config; a fresh run (not a resumed one) starts a new metrics file."""
    out = run_dir(cfg.run.name)
    out.mkdir(parents=True, exist_ok=True)
    if dist_info().is_main:
        if resume is None:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    info(f"chatsmith speedrun → {out}  (device {device}, dtype {str(dtype).replace('torch.', '')})")
    return out


@dataclass
class _Pipeline:
    """The run in progress: each stage's summary and how long each step took, for the report."""

    out: Path
    device: torch.device
    dtype: torch.dtype
    resume: str | None
    stages: dict[str, Any]
    timings: dict[str, float]

    def stage(self, name: str, run_stage: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        """run_stage(*args, metrics=<this stage's rows of metrics.jsonl>, resume=..., **kwargs), timed."""
        metrics = MetricsLog(self.out / "metrics.jsonl", name)
        t = time.time()
        self.stages[name] = run_stage(*args, metrics=metrics, resume=self.resume, **kwargs)
        self.timings[name] = time.time() - t


def _preference_stages(run: _Pipeline, cfg: Config, data: DemoData) -> None:
    """Preference tuning and a reward model on synthetic pairs (correct vs wrong, polite vs
    rude, the user's language vs the other), both from the SFT model."""
    seed, out = cfg.run.seed, run.out
    prefs = preference_pairs(cfg.dpo.train_pairs, seed + 3, "train", cfg.identity, data.words)
    val_prefs = preference_pairs(cfg.dpo.val_pairs, seed + 4, "heldout", cfg.identity, data.words)
    for name, run_stage in (("dpo", run_dpo), ("rm", run_rm)):
        run.stage(name, run_stage, cfg, out / "sft", out / name, prefs, val_prefs, run.device, run.dtype)


def _rl_stage(run: _Pipeline, cfg: Config, data: DemoData) -> None:
    """GRPO from the DPO model on multi-step word problems mixed with the other demo tasks
    (tasks/mixture.py RL_WEIGHTS), rewarded by the exact answer; held-out word problems measure it."""
    seed, out = cfg.run.seed, run.out
    run.stage(
        "rl",
        run_rl,
        cfg,
        out / "dpo",
        out / "rl",
        rl_problems(5000, seed + 5, "train", cfg.identity, data.words),
        word_problems(cfg.rl.eval_problems, seed + 6, "heldout"),
        task_mixture,
        run.device,
        run.dtype,
        rm_dir=out / "rm",
        baseline_dirs={"sft": out / "sft"},
    )


def _report(run: _Pipeline, cfg: Config, evals: dict[str, Any]) -> None:
    setup_info = {
        "device": str(run.device),
        "dtype": str(run.dtype).replace("torch.", ""),
        "seed": cfg.run.seed,
        "model": f"depth {cfg.model.depth}",
    }
    card = {"timings": run.timings, "stages": run.stages, "evals": evals, "setup": setup_info}
    report = write_report(run.out, card)
    info(f"\nreport: {report}")
