"""The run's report card: report.md and a self-contained report.html, with PNG plots.

`write_report(run_dir, summary)` is what the pipeline calls at the end of a run; it keeps
the summary in RUN/summary.json so `chatsmith report RUN` can rebuild the card later.
Per stage (base, sft, dpo, rm, rl): every task's figures, training figures, time and
cost; then curves of loss and metrics, sample answers, and the hardware and versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatsmith.common.dist import is_main
from chatsmith.eval.report_card import (
    TRAINED_BY,
    collect,
    detail_metrics,
    fmt,
    task_cell,
    time_rows,
)
from chatsmith.eval.report_change import BPB_TOLERANCE, compare, fmt_change, stage_pairs
from chatsmith.eval.report_plots import plot_losses, plot_metrics, plot_tasks
from chatsmith.eval.report_render import Section, to_html, to_markdown

TASK_NOTES = {
    "bpb": "bits per byte on the held-out pretraining text (lower is better)",
    "chat": "held-out synthetic conversations, greedy, tools run inside generation",
    "mc": "multiple choice as plain text, by log-likelihood",
    "mc_chat": "multiple choice as a chat turn, by log-likelihood",
    "arith_calc": "arithmetic, calculator allowed",
    "arith_direct": "arithmetic, no calculator",
    "word_problems_unseen": "one-step word problems in phrasings no stage trains on (GSM8K style), "
    "calculator allowed; the demo's model scores 0 at every stage: it answers in the template of "
    "the multi-step problems it was trained on, with a wrong number, so this measures transfer the "
    "demo does not reach (the trained kind is the chat task's word_problems subtask)",
}


# The demo's synthetic chat subtasks, as readers should see them.
SUBTASK_LABELS = {
    "arithmetic": "Arithmetic via calculator (2-3 digits, + - *)",
    "counting": "Letter counting via tool",
    "counting_word_exact": "… and the word quoted back exactly",
    "identity_en": "Identity (English, held-out phrasings)",
    "identity_zh": "Identity (Chinese, held-out phrasings)",
    "spelling": "Spelling",
    "instructions": "Short instructions",
    "multi_turn": "Multi-turn context recall",
    "word_problems": "Word problems, multi-step, via calculator (RL's target)",
}


def _subtask_tables(card: dict[str, Any]) -> list[Section]:
    """Per-subtask accuracy of each task that has subtasks (the demo's chat task), per stage."""
    out: list[Section] = []
    for t in card["tasks"]:
        per = {
            s: card["evals"].get(s, {}).get("tasks", {}).get(t, {}).get("metrics", {}) for s in card["stages"]
        }
        subs = list(
            dict.fromkeys(k[len("accuracy/") :] for m in per.values() for k in m if k.startswith("accuracy/"))
        )
        if not subs:
            continue
        subs.sort(key=lambda x: list(SUBTASK_LABELS).index(x) if x in SUBTASK_LABELS else len(SUBTASK_LABELS))
        rows = []
        for sub in subs:
            n = max((m.get(f"n/{sub}", 0) for m in per.values()), default=0)
            cells = [fmt("accuracy", per[s].get(f"accuracy/{sub}")) for s in card["stages"]]
            rows.append([SUBTASK_LABELS.get(sub, sub), n, *cells])
        out += [("h3", f"{t}: accuracy % per subtask"), ("table", ["subtask", "n", *card["stages"]], rows)]
    return out


def _summary_table(card: dict[str, Any]) -> Section:
    header = ["task", "metric", "n", *card["stages"]]
    rows = []
    for t in card["tasks"]:
        cells = [task_cell(card, s, t) for s in card["stages"]]
        metric = next((m for m, _ in cells if m), "")
        n = max(
            (
                card["evals"].get(s, {}).get("tasks", {}).get(t, {}).get("metrics", {}).get("n", 0)
                for s in card["stages"]
            ),
            default=0,
        )
        label = metric if metric in ("bpb", "") else f"{metric} %"
        rows.append([t, label, n, *[v for _, v in cells]])
    core = []
    for s in card["stages"]:
        cs = [
            r["metrics"]["centered"]
            for r in card["evals"].get(s, {}).get("tasks", {}).values()
            if "centered" in r["metrics"]
        ]
        core.append(fmt("centered", sum(cs) / len(cs)) if cs else "–")
    if any(c != "–" for c in core):
        rows.append(["CORE-style", "mean centered %", "", *core])
    return ("table", header, rows)


def _change_sections(card: dict[str, Any]) -> list[Section]:
    """Each figure's change against the stage before, with its 95 % interval; regressions marked."""
    pairs = stage_pairs(card["stages"], card["evals"])
    if not pairs:
        return []
    per_pair = [
        {c.task: c for c in compare(card["evals"][a]["tasks"], card["evals"][b]["tasks"])} for a, b in pairs
    ]
    names = list(dict.fromkeys(t for ch in per_pair for t in ch))
    rows = []
    for t in names:
        n = max((ch[t].n for ch in per_pair if t in ch), default=0)
        label = SUBTASK_LABELS.get(t.split("/", 1)[1], t) if "/" in t else t
        rows.append([label, n, *[fmt_change(ch[t]) if t in ch else "–" for ch in per_pair]])
    note = (
        "Change in points against the stage before, with its 95 % interval (Newcombe's score interval "
        "of a difference of proportions). 🔴 marks a regression (the whole interval below 0), ▲ a gain; "
        f"bits per byte has no interval and counts as a regression when it rises more than "
        f"{100 * BPB_TOLERANCE:.0f} %."
    )
    header = ["task", "n", *[f"{a} → {b}" for a, b in pairs]]
    return [("h2", "Change against the previous stage"), ("p", note), ("table", header, rows)]


def _stage_sections(card: dict[str, Any], stage: str) -> list[Section]:
    out: list[Section] = [("h3", stage)]
    ev = card["evals"].get(stage, {})
    if "error" in ev:
        out.append(("p", f"not evaluated: {ev['error']}"))
    rows = []
    for t in card["tasks"]:
        r = ev.get("tasks", {}).get(t)
        if not r:
            continue
        for k in detail_metrics(card, t):
            if k in r["metrics"] and k not in ("n", "chance"):
                n = r["metrics"].get("n/" + k.split("/", 1)[1]) if "/" in k else r["metrics"].get("n")
                rows.append([t, k, fmt(k, r["metrics"][k]), n if n is not None else ""])
    if rows:
        out.append(("table", ["task", "metric", "value", "n"], rows))
    train = card["training"].get(TRAINED_BY[stage], {})
    secs = card["timings"].get(TRAINED_BY[stage])
    figures = [
        f"{k}: {fmt(k, v)}" for k, v in train.items() if k not in ("seconds", "lr", "tok_per_s", "grad_norm")
    ]
    if secs is not None:
        figures.append(f"training time: {secs:.1f} s")
    if "seconds" in ev:
        figures.append(f"evaluation time: {ev['seconds']:.1f} s")
    if figures:
        out.append(("list", figures))
    return out


def _samples(card: dict[str, Any], per_stage: int = 10) -> list[str]:
    items = []
    for s in card["stages"]:
        shown = 0
        for t, r in card["evals"].get(s, {}).get("tasks", {}).items():
            for smp in r.get("samples", [])[:2]:
                if shown >= per_stage:
                    break
                shown += 1
                mark = "✓" if smp.get("correct") else "✗"
                tools = f" — tool results: {', '.join(smp['tools'])}" if smp.get("tools") else ""
                sub = f"/{smp['subtask']}" if smp.get("subtask") else ""
                items.append(f"{s} · {t}{sub} {mark} Q: {smp['question']!r} → {smp['reply']!r}{tools}")
    return items


def build_sections(card: dict[str, Any], plots: dict[str, Path | None]) -> list[Section]:
    secs: list[Section] = [("h1", f"chatsmith report card — run {card['run']}")]
    secs += [("h2", "Summary"), _summary_table(card)]
    notes = [f"{t}: {TASK_NOTES[t]}" for t in card["tasks"] if t in TASK_NOTES]
    secs.append(
        (
            "p",
            "Accuracies in %. CORE-style: the mean over multiple-choice tasks of centered accuracy "
            "(chance 0, perfect 100). Per-subtask figures are in the stage tables. " + "; ".join(notes),
        )
    )
    secs += _subtask_tables(card)
    secs += _change_sections(card)
    if plots.get("tasks"):
        secs.append(("img", plots["tasks"].name, "task figures per stage"))
    secs.append(("h2", "Stages"))
    for s in card["stages"]:
        secs += _stage_sections(card, s)
    rows = time_rows(card)
    if rows:
        total = sum(r[1] for r in rows)
        secs += [
            ("h2", "Time and cost"),
            ("table", ["stage", "seconds", "cost"], [[a, f"{b:.1f}", c] for a, b, c in rows]),
        ]
        secs.append(("p", f"Total: {total:.0f} s. Set CHATSMITH_PRICE_PER_HOUR to see costs in money."))
    if plots.get("loss") or plots.get("metrics"):
        secs.append(("h2", "Training curves"))
        for key, alt in (("loss", "loss curves"), ("metrics", "other training metrics")):
            if plots.get(key):
                secs.append(("img", plots[key].name, alt))
    samples = _samples(card)
    if samples:
        secs += [("h2", "Sample answers (held-out)"), ("list", samples)]
    setup = [f"{k}: {v}" for k, v in card["hardware"].items()] + [
        f"{k}: {v}" for k, v in card["setup"].items()
    ]
    secs += [("h2", "Hardware and versions"), ("list", setup)]
    return secs


def write_report(
    run_dir: Path, summary: dict[str, Any] | None = None, price_per_hour: float | None = None
) -> Path:
    """Write report.md, report.html and the plots into run_dir; returns report.md's path.

    summary: {"timings": {stage: s}, "stages": {name: figures}, "evals": {stage: results}, "setup": {...}};
    None reads RUN/summary.json (what `chatsmith report RUN` does).
    """
    run_dir = Path(run_dir)
    out = run_dir / "report.md"
    if not is_main():
        return out
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    card = collect(run_dir, summary, price_per_hour)
    plots = {
        "loss": plot_losses(card["metrics_rows"], run_dir / "loss.png"),
        "metrics": plot_metrics(card["metrics_rows"], run_dir / "metrics.png"),
        "tasks": plot_tasks(card, run_dir / "tasks.png"),
    }
    sections = build_sections(card, plots)
    out.write_text(to_markdown(sections))
    (run_dir / "report.html").write_text(to_html(sections, f"chatsmith report — {card['run']}", run_dir))
    return out
