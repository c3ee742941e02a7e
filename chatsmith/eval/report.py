"""The run's report card: figures per stage, time per stage, loss curves (report.md + PNG)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from chatsmith.common.log import read_metrics

TASK_LABELS = {
    "arithmetic": "Arithmetic via calculator (2-3 digits, + - *)",
    "counting": "Letter counting via tool",
    "counting_word_exact": "… and the word quoted back exactly",
    "identity_en": "Identity (English, held-out phrasings)",
    "identity_zh": "Identity (Chinese, held-out phrasings)",
    "spelling": "Spelling",
    "instructions": "Short instructions",
    "multi_turn": "Multi-turn context recall",
}


def plot_losses(metrics_path: Path, out: Path) -> Path | None:
    rows = read_metrics(metrics_path)
    stages = [
        s
        for s in dict.fromkeys(r["stage"] for r in rows)
        if any("train_loss" in r for r in rows if r["stage"] == s)
    ]
    if not stages:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.8), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rs = [r for r in rows if r["stage"] == stage and "train_loss" in r]
        ax.plot([r["step"] for r in rs], [r["train_loss"] for r in rs], lw=1, alpha=0.8, label="train")
        vs = [r for r in rs if "val_loss" in r]
        if vs:
            ax.plot([r["step"] for r in vs], [r["val_loss"] for r in vs], "o-", ms=3, label="validation")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def write_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """summary: {"config", "timings": {stage: s}, "stages": {name: figures}, "evals": {model: result}}."""
    plot = plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    ev = summary.get("evals", {})
    models = list(ev)
    lines = [f"# chatsmith report — run `{run_dir.name}`", ""]
    lines += [
        "## Held-out tasks",
        "",
        "| task | n | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    tasks = sorted(
        {t for m in models for t in ev[m]["accuracy"]},
        key=lambda t: list(TASK_LABELS).index(t) if t in TASK_LABELS else 99,
    )
    for t in tasks:
        n = max(ev[m]["counts"].get(t, 0) for m in models)
        lines.append(
            f"| {TASK_LABELS.get(t, t)} | {n} | "
            + " | ".join(_pct(ev[m]["accuracy"].get(t)) for m in models)
            + " |"
        )
    lines += [
        "",
        "`base` is the pretrained model (its corpus mixes in rendered training conversations, "
        "a light mid-training), scored on a smaller sample; `sft` is after supervised fine-tuning. "
        "Held-out questions never appear in training: a stable hash of each question's key "
        "(the numbers, the word, the phrasing) picks its split. Answers are greedy; tools run "
        "inside generation. A right count can come from a miscopied word with the same count; "
        "the row below it counts only answers that also quote the word back exactly.",
        "",
    ]
    lines += [
        "## Stages",
        "",
        "| stage | seconds | final train loss | validation loss | other |",
        "|---|---|---|---|---|",
    ]
    for name, secs in summary.get("timings", {}).items():
        st = summary.get("stages", {}).get(name, {})
        other = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in st.items()
            if k not in ("train_loss", "val_loss", "seconds", "step", "lr", "tok_per_s", "grad_norm")
        )
        tl = f"{st['train_loss']:.4f}" if "train_loss" in st else "–"
        vl = f"{st['val_loss']:.4f}" if "val_loss" in st else "–"
        lines.append(f"| {name} | {secs:.1f} | {tl} | {vl} | {other} |")
    total = sum(summary.get("timings", {}).values())
    lines += ["", f"Total: {total:.0f} s.", ""]
    if plot:
        lines += ["## Loss curves", "", f"![loss curves]({plot.name})", ""]
    lines += ["## Sample answers (held-out, greedy)", ""]
    for m in models:
        for t, ss in ev[m].get("samples", {}).items():
            for s in ss[:2]:
                tools = f" — tool results: {', '.join(s['tools'])}" if s["tools"] else ""
                lines.append(
                    f"- **{m} / {t}** {'✓' if s['ok'] else '✗'} Q: {s['question']!r} → {s['reply']!r}{tools}"
                )
    lines += ["", "## Setup", ""]
    for k, v in summary.get("setup", {}).items():
        lines.append(f"- {k}: {v}")
    lines.append(
        f"- python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
