"""Evaluating a model on a list of tasks, and every stage of a run on the demo's tasks.

A task spec is a task file (.jsonl, see docs/tasks.md) or `bpb:PATH` (bits per byte on
held-out text). Under torchrun each process takes its blocks of examples (eval/shard.py)
and every process ends with the same, complete results; rank 0 writes files.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.dist import barrier, is_main
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info, progress
from chatsmith.eval import cache
from chatsmith.eval.bpb import load_documents, summarize_bpb, window_losses, windows
from chatsmith.eval.code_eval import evaluate_code, summarize_code
from chatsmith.eval.demo_tasks import write_demo_tasks
from chatsmith.eval.generative import evaluate_chat_task, evaluate_generative, samples, summarize_generative
from chatsmith.eval.multiple_choice import evaluate_mc, summarize_mc
from chatsmith.eval.shard import gather_records, my_blocks, my_indices
from chatsmith.eval.tasks import Task, load_task
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer

STAGES = ("base", "sft", "dpo", "rm", "rl")


@dataclass
class EvalSettings:
    seed: int = 1337
    limit: int | None = None  # evaluate the first `limit` examples of each task
    batch_tokens: int = 8192  # tokens per forward pass when scoring
    block: int = 16  # consecutive examples per unit of work (and batch) handed to one process
    workers: int = 2  # concurrent sandboxed programs for code tasks
    max_new_tokens: int | None = None  # a cap on every generative task's own limit (quick checks)

    def key(self, dtype: torch.dtype) -> dict[str, Any]:
        return {**asdict(self), "dtype": str(dtype), "workers": None}


@dataclass
class BpbSpec:
    name: str
    path: Path


def load_spec(spec: str | Path) -> Task | BpbSpec:
    s = str(spec)
    if s.startswith("bpb:"):
        return BpbSpec("bpb", Path(s[4:]).expanduser())
    return load_task(Path(s).expanduser())


def _run_bpb(
    model: GPT, tok: BPETokenizer, spec: BpbSpec, st: EvalSettings, dtype: torch.dtype
) -> dict[str, Any]:
    docs, nbytes = load_documents(spec.path, tok)
    wins = windows(docs, model.cfg.seq_len)
    recs = []
    blocks = my_blocks(len(wins), st.block)
    for blk in progress(blocks, total=len(blocks), desc="bpb"):
        scored = window_losses(model, [wins[i] for i in blk], tok.bos_id, dtype, st.batch_tokens)
        recs += [{"index": i, "nats": x, "tokens": n} for i, (x, n) in zip(blk, scored)]
    return {"type": "bpb", "file": str(spec.path), "metrics": summarize_bpb(gather_records(recs), nbytes)}


def _run_task(
    model: GPT, tok: BPETokenizer, task: Task, st: EvalSettings, dtype: torch.dtype
) -> dict[str, Any]:
    n = len(task.examples) if st.limit is None else min(st.limit, len(task.examples))
    if st.max_new_tokens:
        task = replace(
            task, config={**task.config, "max_new_tokens": min(st.max_new_tokens, task.max_new_tokens)}
        )
    if task.type == "code":  # one problem at a time: its samples are one batch
        recs = evaluate_code(model, tok, task, my_indices(n, st.block), st.seed, dtype, st.workers)
    else:
        # One block of examples at a time: its scoring batches, or its generation batch, are
        # then the same whatever the number of processes.
        blocks = my_blocks(n, st.block)
        recs = []
        for blk in progress(blocks, total=len(blocks), desc=task.name):
            if task.type == "multiple_choice":
                recs += evaluate_mc(model, tok, task, blk, st.seed, dtype, st.batch_tokens)
            elif task.type == "chat":
                recs += evaluate_chat_task(model, tok, task, blk, st.seed, dtype)
            else:
                recs += evaluate_generative(model, tok, task, blk, st.seed, dtype)
    recs = gather_records(recs)
    if task.type == "multiple_choice":
        metrics, shown = summarize_mc(recs), []
    elif task.type == "code":
        metrics, shown = summarize_code(recs, task.config["k"]), samples(recs)
    else:
        metrics, shown = summarize_generative(recs), samples(recs)
    return {"type": task.type, "file": task.path, "metrics": metrics, "samples": shown}


def evaluate_model(
    model: GPT,
    tok: BPETokenizer,
    specs: list[str | Path | Task | BpbSpec],
    settings: EvalSettings | None = None,
    dtype: torch.dtype = torch.float32,
    model_key: str | None = None,
    cache_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """{task name: {"type", "metrics", "samples", "seconds"}} for every spec, in order.

    With a model_key (checkpoint_key of its weights) and a cache_dir, finished results are
    read back instead of recomputed.
    """
    st = settings or EvalSettings()
    tasks = [s if isinstance(s, (Task, BpbSpec)) else load_spec(s) for s in specs]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ChatsmithError(f"two tasks have the same name ({', '.join(names)}); rename one in its header")
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        digest = task.digest if isinstance(task, Task) else _file_digest(task.path)
        key = cache.cache_key(model_key, task.name, digest, st.key(dtype)) if model_key else ""
        hit = cache.load(cache_dir, key) if key else None
        if hit is not None:
            out[task.name] = {**hit, "cached": True}
            continue
        t0 = time.time()
        if isinstance(task, BpbSpec):
            res = _run_bpb(model, tok, task, st, dtype)
        else:
            res = _run_task(model, tok, task, st, dtype)
        res["seconds"] = round(time.time() - t0, 2)
        if key and is_main():
            cache.store(cache_dir, key, res)
        out[task.name] = res
    barrier()
    return out


def _base_limit(run_dir: Path) -> int | None:
    """The run's eval.base_limit: the base model cannot chat yet, so a few questions a task show
    that (the demo's chat questions would cost it the most, every answer running to the limit)."""
    try:
        return int(json.loads((run_dir / "config.json").read_text())["eval"]["base_limit"]) or None
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _file_digest(path: Path) -> str:
    import hashlib

    p = Path(path)
    if not p.is_file():
        raise ChatsmithError(f"no held-out text at {p}")
    h = hashlib.sha256(p.read_bytes())
    if p.suffix == ".bin" and p.with_suffix(".json").is_file():
        h.update(p.with_suffix(".json").read_bytes())
    return h.hexdigest()


def headline(results: dict[str, dict[str, Any]]) -> str:
    """One line per model: the main figure of each task."""
    parts = []
    for name, r in results.items():
        m = r["metrics"]
        main = "bpb" if "bpb" in m else next((k for k in ("pass@1", "accuracy") if k in m), None)
        if main:
            parts.append(f"{name} {m[main]:.3f}" if main == "bpb" else f"{name} {100 * m[main]:.1f}%")
    return ", ".join(parts)


def write_results(path: Path, results: dict[str, Any]) -> None:
    if is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1, ensure_ascii=False))


def evaluate_stages(
    run_dir: Path,
    stages: list[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    settings: EvalSettings | None = None,
    tasks: list[str | Path] | None = None,
    use_cache: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every stage's checkpoint on bpb (the run's held-out shard) and the demo's tasks.

    Returns {stage: {"tasks": {name: result}, "seconds": s}} (or {"error": message} for a
    stage whose checkpoint cannot be evaluated) and writes RUN/eval/results.json.
    Results are cached in RUN/eval/cache, keyed by the weights, so a repeat costs nothing.
    """
    run_dir = Path(run_dir)
    if tasks is None:
        if is_main():
            write_demo_tasks(run_dir)
        barrier()
        tasks = sorted((run_dir / "eval" / "tasks").glob("*.jsonl"))
    specs: list[str | Path] = list(tasks)
    val = run_dir / "data" / "pretrain_val.bin"
    if val.is_file():
        specs.insert(0, f"bpb:{val}")
    st = settings or EvalSettings()
    stages = stages or [s for s in STAGES if cache.has_weights(run_dir / s)]
    out: dict[str, dict[str, Any]] = {}
    base_limit = _base_limit(run_dir)
    for stage in stages:
        t0 = time.time()
        try:
            model, tok, _ = load_checkpoint(run_dir / stage, device)
            res = evaluate_model(
                model,
                tok,
                specs,
                replace(st, limit=base_limit) if stage == "base" and base_limit and st.limit is None else st,
                dtype,
                cache.checkpoint_key(run_dir / stage),
                run_dir / "eval" / "cache" if use_cache else None,
            )
        except ChatsmithError as e:
            info(f"[eval] {stage}: cannot evaluate ({e})")
            out[stage] = {"error": str(e)}
            continue
        out[stage] = {"tasks": res, "seconds": round(time.time() - t0, 2)}
        info(f"[eval] {stage}: {headline(res)}  ({time.time() - t0:.0f}s)")
    write_results(run_dir / "eval" / "results.json", out)
    return out
