"""Before and after one post-training stage: both checkpoints on the run's evaluation tasks.

`chatsmith dpo` and `chatsmith rl` end with this table, so a user sees what the stage cost
as well as what it bought, and a warning for every figure that fell below its 95 % interval
(report_change). The run's tasks are RUN/eval/tasks/*.jsonl (a demo run writes its own) and
bits per byte on its held-out shard; results are cached by weights, so a checkpoint the
report card has already evaluated costs nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info
from chatsmith.eval import cache
from chatsmith.eval.demo_tasks import write_demo_tasks
from chatsmith.eval.report_change import change_table, compare, warnings
from chatsmith.eval.runner import evaluate_model


def run_task_specs(run: Path) -> list[str | Path]:
    """The run's evaluation tasks: bpb on its held-out shard and its task files (a demo run's
    are written first when missing)."""
    tasks_dir = run / "eval" / "tasks"
    if not any(tasks_dir.glob("*.jsonl")):
        with contextlib.suppress(ChatsmithError):  # not a demo run: only what it has
            write_demo_tasks(run)
    specs: list[str | Path] = sorted(tasks_dir.glob("*.jsonl"))
    val = run / "data" / "pretrain_val.bin"
    if val.is_file():
        specs.insert(0, f"bpb:{val}")
    return specs


def _evaluate(
    ckpt: Path, specs: list[str | Path], run: Path, device: Any, dtype: torch.dtype
) -> dict[str, Any]:
    model, tok, _ = load_checkpoint(ckpt, device)
    return evaluate_model(model, tok, specs, None, dtype, cache.checkpoint_key(ckpt), run / "eval" / "cache")


def text_table(header: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell, for the console."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def before_after(
    run: Path, before: Path, after: Path, device: Any, dtype: torch.dtype, names: tuple[str, str]
) -> list[str]:
    """Evaluate both checkpoints, print the change of every figure, warn for each regression;
    returns the warnings."""
    specs = run_task_specs(run)
    if not specs:
        info(f"[compare] {run} has no evaluation tasks (RUN/eval/tasks/*.jsonl): nothing to compare")
        return []
    r0 = _evaluate(before, specs, run, device, dtype)
    r1 = _evaluate(after, specs, run, device, dtype)
    changes = compare(r0, r1)
    header, rows = change_table(*names, changes)
    info(f"\n[compare] {names[0]} ({before}) -> {names[1]} ({after})\n" + text_table(header, rows))
    lines = warnings(changes, *names)
    for w in lines:
        info(f"WARNING: {w}")
    if not lines:
        info(f"[compare] no figure fell below its 95 % interval of {names[0]}'s")
    return lines
