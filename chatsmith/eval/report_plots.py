"""The report card's figures as PNG files: training curves, other logged metrics, task scores, RL curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatsmith.eval.report_card import main_metric

SKIP = {"stage", "time", "step", "train_loss", "val_loss"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(rows: list[dict[str, Any]], out: Path) -> Path | None:
    """Train and validation loss per training stage, side by side."""
    stages = [
        s
        for s in dict.fromkeys(r["stage"] for r in rows)
        if any("train_loss" in r for r in rows if r["stage"] == s)
    ]
    if not stages:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(stages), figsize=(4.6 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rs = [r for r in rows if r["stage"] == stage and "train_loss" in r]
        ax.plot([r["step"] for r in rs], [r["train_loss"] for r in rs], lw=1, alpha=0.8, label="train")
        vs = [r for r in rows if r["stage"] == stage and "val_loss" in r and "step" in r]  # not a summary
        if vs:
            ax.plot([r["step"] for r in vs], [r["val_loss"] for r in vs], "o-", ms=3, label="validation")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_metrics(rows: list[dict[str, Any]], out: Path, max_panels: int = 8) -> Path | None:
    """Every other numeric series logged during training (validation bpb, rewards, lr, ...)."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        for k, v in r.items():
            if k in SKIP or not isinstance(v, (int, float)) or isinstance(v, bool) or "step" not in r:
                continue
            series.setdefault(k, {}).setdefault(r["stage"], []).append((r["step"], v))
    if not series:
        return None
    names = list(series)[:max_panels]
    plt = _plt()
    cols = min(4, len(names))
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 2.9 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for stage, pts in series[name].items():
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                lw=1,
                label=stage,
                marker="o" if len(pts) < 20 else None,
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_tasks(card: dict[str, Any], out: Path) -> Path | None:
    """Each task's main figure per stage: accuracies as grouped bars, bpb in its own panel."""
    stages = [s for s in card["stages"] if card["evals"].get(s, {}).get("tasks")]
    if not stages:
        return None
    acc_tasks, bpb = [], {}
    for t in card["tasks"]:
        for s in stages:
            mm = main_metric(card["evals"][s]["tasks"].get(t, {}).get("metrics", {}))
            if mm and mm[0] == "bpb":
                bpb[s] = mm[1]
            elif mm and t not in acc_tasks:
                acc_tasks.append(t)
    plt = _plt()
    fig, axes = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [max(1, len(acc_tasks)), 1.2]}, squeeze=False
    )
    ax = axes[0][0]
    width = 0.8 / len(stages)
    for j, s in enumerate(stages):
        vals = []
        for t in acc_tasks:
            mm = main_metric(card["evals"][s]["tasks"].get(t, {}).get("metrics", {}))
            vals.append(100 * mm[1] if mm else 0.0)
        ax.bar([i + j * width for i in range(len(acc_tasks))], vals, width, label=s)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(acc_tasks))])
    ax.set_xticklabels(acc_tasks, rotation=20, fontsize=8)
    ax.set_ylabel("% (accuracy or pass@1)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax2 = axes[0][1]
    if bpb:
        ax2.bar(list(bpb), list(bpb.values()), color="gray")
        ax2.set_title("bpb (lower is better)", fontsize=10)
        ax2.grid(axis="y", alpha=0.3)
    else:
        ax2.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_rl(rows: list[dict[str, Any]], out: Path, stage: str = "rl") -> Path | None:
    """Mean reward and pass@k per step, held-out accuracy at each evaluation: one PNG."""
    # Rows without a step are summaries (an early stop's restored figures), not points of a curve.
    rows = [r for r in rows if r.get("stage") == stage and "step" in r]
    if not rows:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    tr = [r for r in rows if "reward" in r]
    a1.plot([r["step"] for r in tr], [r["reward"] for r in tr], lw=1, label="mean reward")
    for k in sorted({k for r in tr for k in r if k.startswith("pass@")}):
        a1.plot([r["step"] for r in tr], [r.get(k, float("nan")) for r in tr], lw=1, alpha=0.8, label=k)
    a1.set_title("GRPO training rollouts")
    ev = [r for r in rows if "val_accuracy" in r]
    a2.plot([r["step"] for r in ev], [100 * r["val_accuracy"] for r in ev], "o-", ms=4)
    a2.set_title("held-out word problems, greedy")
    a2.set_ylabel("accuracy (%)")
    for ax in (a1, a2):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    a1.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
