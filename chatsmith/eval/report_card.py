"""The report card's content: everything known about a run, gathered into one dict.

Sources in the run folder: summary.json (what the pipeline measured: time per stage,
training figures, setup), eval/results.json (every stage on every task), metrics.jsonl
(training curves), config.json. Rendering lives in report_md.py and report_html.py.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

import chatsmith
from chatsmith.common.log import read_metrics

MODEL_STAGES = ("base", "sft", "dpo", "rm", "rl")
# The training stage (metrics.jsonl "stage") that produces each model stage's checkpoint.
TRAINED_BY = {"base": "pretrain", "sft": "sft", "dpo": "dpo", "rm": "rm", "rl": "rl"}
MAIN_METRIC = ("bpb", "pass@1", "accuracy")
# Training figures shown in the per-stage tables; the rest of a stage's row stays in summary.json.
HIDDEN = ("seconds", "step", "lr", "tok_per_s", "grad_norm")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def hardware() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    hw = {"cpu": f"{cpu} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"}
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        hw["gpu"] = f"{len(names)} × {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    else:
        hw["gpu"] = "none"
    hw["versions"] = (
        f"chatsmith {chatsmith.__version__}, python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()} {platform.machine()}"
    )
    return hw


def legacy_evals(evals: dict[str, Any]) -> dict[str, Any]:
    """Chat-eval results in the old form ({model: {"accuracy": {task: x}, ...}}) as stage results."""
    out = {}
    for stage, r in evals.items():
        if isinstance(r, dict) and "accuracy" in r and "tasks" not in r:
            metrics: dict[str, Any] = {"n": sum(r.get("counts", {}).values())}
            metrics.update({f"accuracy/{k}": v for k, v in r["accuracy"].items()})
            metrics.update({f"n/{k}": v for k, v in r.get("counts", {}).items()})
            samples = [
                {"subtask": t, "question": s["question"], "reply": s["reply"], "correct": s["ok"]}
                for t, ss in r.get("samples", {}).items()
                for s in ss
            ]
            out[stage] = {"tasks": {"chat": {"type": "chat", "metrics": metrics, "samples": samples}}}
        else:
            out[stage] = r
    return out


def main_metric(metrics: dict[str, Any]) -> tuple[str, float] | None:
    for k in MAIN_METRIC:
        if k in metrics:
            return k, metrics[k]
    return None


def _stage_seconds(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        out[r["stage"]] = max(out.get(r["stage"], 0.0), float(r.get("time", 0.0)))
    return out


def collect(
    run_dir: Path, summary: dict[str, Any] | None = None, price_per_hour: float | None = None
) -> dict:
    """The card's content for a run folder; `summary` (from the pipeline) overrides summary.json."""
    run_dir = Path(run_dir)
    summary = summary if summary is not None else (_read_json(run_dir / "summary.json") or {})
    rows = read_metrics(run_dir / "metrics.jsonl")
    evals = _read_json(run_dir / "eval" / "results.json") or {}
    evals.update(legacy_evals(summary.get("evals", {})))
    timings = dict(summary.get("timings") or _stage_seconds(rows))
    if price_per_hour is None and os.environ.get("CHATSMITH_PRICE_PER_HOUR"):
        price_per_hour = float(os.environ["CHATSMITH_PRICE_PER_HOUR"])
    present = [s for s in MODEL_STAGES if s in evals or (run_dir / s / "model.safetensors").is_file()]
    tasks: list[str] = []
    for s in present:
        for name in evals.get(s, {}).get("tasks", {}):
            if name not in tasks:
                tasks.append(name)
    if "bpb" in tasks:  # bpb first, as the one figure every stage has
        tasks.remove("bpb")
        tasks.insert(0, "bpb")
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "stages": present,
        "tasks": tasks,
        "evals": evals,
        "training": summary.get("stages", {}),
        "timings": timings,
        "price_per_hour": price_per_hour,
        "setup": summary.get("setup", {}),
        "config": _read_json(run_dir / "config.json") or {},
        "hardware": hardware(),
        "metrics_rows": rows,
    }


def fmt(metric: str, x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if "bpb" in metric or "loss" in metric:
        return f"{x:.3f}"
    if metric.startswith(("accuracy", "pass@", "centered", "chance")):
        return f"{100 * x:.1f}"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def task_cell(card: dict, stage: str, task: str) -> tuple[str, str]:
    """(main metric name, formatted value) of one task for one stage."""
    r = card["evals"].get(stage, {}).get("tasks", {}).get(task)
    if not r:
        return "", "–"
    mm = main_metric(r["metrics"])
    return (mm[0], fmt(*mm)) if mm else ("", "–")


def time_rows(card: dict) -> list[tuple[str, float, str]]:
    """(stage, seconds, cost) per timed stage; cost in device-hours, and money when priced."""
    n_dev = max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    kind = "GPU-h" if torch.cuda.is_available() else "machine-h"
    out = []
    for stage, secs in card["timings"].items():
        cost = f"{secs / 3600 * n_dev:.4f} {kind}"
        if card["price_per_hour"]:
            cost += f" (${secs / 3600 * card['price_per_hour']:.4f})"
        out.append((stage, float(secs), cost))
    return out


def detail_metrics(card: dict, task: str) -> list[str]:
    """Every metric any stage reports for a task (n/... counts folded into their rows)."""
    keys: list[str] = []
    for s in card["stages"]:
        for k in card["evals"].get(s, {}).get("tasks", {}).get(task, {}).get("metrics", {}):
            if k not in keys and not k.startswith("n/") and k not in ("tokens", "bytes"):
                keys.append(k)
    return keys
