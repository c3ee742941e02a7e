"""How each task moved from one stage to the next, with a 95 % interval, and which moves are real.

An accuracy over n questions is a binomial proportion; the change between two stages gets
Newcombe's hybrid score interval (Newcombe 1998, "Interval estimation for the difference
between independent proportions", method 10), built from each side's Wilson interval
(Wilson 1927). It treats the two stages' answers as independent, which is conservative when
the questions are the same ones (a paired interval would be narrower). A change whose whole
interval lies below 0 is a regression; one wholly above 0 is a gain; the rest is noise.

Bits per byte is not a share of questions: its windows of one held-out text are not
independent draws, so it gets a tolerance instead of an interval (BPB_TOLERANCE).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

Z95 = 1.959964
# A rise in bits per byte over this fraction of the previous stage's figure counts as a regression.
BPB_TOLERANCE = 0.25
RED = "🔴"  # marks a regression in the card's cells (and makes the HTML cell red)


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (k may be a share times n)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def diff_interval(p0: float, n0: int, p1: float, n1: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's 95 % interval of p1 - p0 from accuracies p0 over n0 and p1 over n1 questions."""
    l0, u0 = wilson(p0 * n0, n0, z)
    l1, u1 = wilson(p1 * n1, n1, z)
    d = p1 - p0
    return d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


@dataclass
class Change:
    """One figure of one task between two stages; lo/hi bound the change (None for bpb)."""

    task: str  # "chat", or "chat/counting" for a subtask
    metric: str  # "accuracy", "bpb", "pass@1", ...
    n: int
    before: float
    after: float
    lo: float | None
    hi: float | None
    verdict: str  # "regression", "gain" or "" (within its interval)

    @property
    def delta(self) -> float:
        return self.after - self.before


def figures(tasks: dict[str, Any]) -> dict[str, tuple[str, float, int]]:
    """{name: (metric, value, n)} of a stage's results: each task's main figure and its subtasks."""
    out: dict[str, tuple[str, float, int]] = {}
    for name, r in tasks.items():
        m = r.get("metrics", {})
        main = next((k for k in ("bpb", "pass@1", "accuracy") if k in m), None)
        if main is None:
            continue
        out[name] = (main, float(m[main]), int(m.get("n", 0)))
        for k, v in m.items():
            if k.startswith("accuracy/"):
                sub = k.split("/", 1)[1]
                out[f"{name}/{sub}"] = ("accuracy", float(v), int(m.get(f"n/{sub}", 0)))
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Every figure both stages' results have ({task: {"metrics": ...}}), in the later one's order."""
    f0, f1 = figures(before), figures(after)
    out = []
    for name, (metric, v1, n1) in f1.items():
        if name not in f0 or f0[name][0] != metric:
            continue
        _, v0, n0 = f0[name]
        if metric == "bpb":
            bad = v1 > v0 * (1 + BPB_TOLERANCE)
            out.append(Change(name, metric, n1, v0, v1, None, None, "regression" if bad else ""))
            continue
        lo, hi = diff_interval(v0, n0, v1, n1)
        verdict = "regression" if hi < 0 else "gain" if lo > 0 else ""
        out.append(Change(name, metric, n1, v0, v1, lo, hi, verdict))
    return out


def stage_pairs(stages: list[str], evals: dict[str, Any]) -> list[tuple[str, str]]:
    """(previous, next) for each evaluated stage after the first (a stage without results is skipped)."""
    have = [s for s in stages if evals.get(s, {}).get("tasks")]
    return list(itertools.pairwise(have))


def fmt_change(c: Change) -> str:
    """'-12.5 [-24.1, -0.6]' in points for accuracies, '+0.310 (+7.6 %)' for bpb; a regression is
    marked with RED in front (the HTML card colours the cell), a gain with ▲ behind."""
    if c.metric == "bpb":
        text = f"{c.delta:+.3f} ({100 * c.delta / c.before:+.1f} %)" if c.before else f"{c.delta:+.3f}"
    else:
        text = f"{100 * c.delta:+.1f} [{100 * (c.lo or 0):+.1f}, {100 * (c.hi or 0):+.1f}]"
    if c.verdict == "regression":
        return f"{RED} {text}"
    return text + (" ▲" if c.verdict == "gain" else "")


def warnings(changes: list[Change], before: str, after: str) -> list[str]:
    """One line per regression, as `chatsmith dpo|rl` print them."""
    out = []
    for c in changes:
        if c.verdict != "regression":
            continue
        if c.metric == "bpb":
            why = f"more than {100 * BPB_TOLERANCE:.0f} % above {before}"
            out.append(f"{c.task} rose from {c.before:.3f} to {c.after:.3f} ({why})")
        else:
            out.append(
                f"{c.task} fell from {100 * c.before:.1f} to {100 * c.after:.1f} % (n {c.n}), "
                f"below the 95 % interval of the change from {before} to {after} "
                f"[{100 * (c.lo or 0):+.1f}, {100 * (c.hi or 0):+.1f}]"
            )
    return out


def change_table(before: str, after: str, changes: list[Change]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a before/after table (for the report card and the post-training verbs)."""
    rows = []
    for c in changes:
        show = (lambda x: f"{x:.3f}") if c.metric == "bpb" else (lambda x: f"{100 * x:.1f}")
        rows.append([c.task, c.metric, c.n, show(c.before), show(c.after), fmt_change(c)])
    return ["task", "metric", "n", before, after, "change [95 % interval]"], rows
