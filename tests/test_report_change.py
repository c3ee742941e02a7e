"""The report's change intervals: a real regression is flagged, noise is not."""

from __future__ import annotations

import json

import pytest

from chatsmith.eval.report import write_report
from chatsmith.eval.report_change import RED, compare, diff_interval, warnings, wilson


def _result(acc_a: float, acc_b: float, bpb: float) -> dict:
    """One stage's results: two 200-question tasks and bits per byte."""
    return {
        "tasks": {
            "bpb": {"type": "bpb", "metrics": {"n": 40, "bpb": bpb}},
            "mc": {"type": "multiple_choice", "metrics": {"n": 200, "accuracy": acc_b}},
            "chat": {
                "type": "chat",
                "metrics": {"n": 200, "accuracy": acc_a, "accuracy/counting": acc_a, "n/counting": 200},
            },
        }
    }


@pytest.fixture
def result_files(tmp_path):
    """A made-up pair of result files: chat (all counting) drops 20 points (real), mc 4 (noise)."""
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(_result(0.80, 0.70, 4.0)))
    after.write_text(json.dumps(_result(0.60, 0.66, 4.3)))
    return before, after


def test_wilson_matches_the_published_values():
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    # Newcombe (1998), table II, example (a): 56/70 - 48/80 -> 0.0524 to 0.3339
    assert diff_interval(48 / 80, 80, 56 / 70, 70) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_a_real_regression_is_flagged_and_noise_is_not(result_files):
    before, after = (json.loads(p.read_text())["tasks"] for p in result_files)
    changes = {c.task: c for c in compare(before, after)}
    flagged = sorted(t for t, c in changes.items() if c.verdict == "regression")
    assert flagged == ["chat", "chat/counting"]  # the task and its one subtask
    assert changes["mc"].lo < 0 < changes["mc"].hi
    assert changes["bpb"].verdict == ""  # +7.5 % is within the tolerance
    lines = warnings(list(changes.values()), "sft", "dpo")
    assert len(lines) == 2 and lines[0].startswith("chat fell from 80.0 to 60.0 % (n 200)")


def test_the_card_marks_exactly_the_regression_in_red(result_files, tmp_path):
    before, after = (json.loads(p.read_text()) for p in result_files)
    run = tmp_path / "run"
    run.mkdir()
    md = write_report(run, {"evals": {"sft": before, "dpo": after}}).read_text()
    table = md.split("## Change against the previous stage", 1)[1].split("\n## ", 1)[0]
    red_rows = [ln for ln in table.splitlines() if ln.startswith("|") and RED in ln]
    assert len(red_rows) == 2 and red_rows[0].startswith("| chat |") and "Letter counting" in red_rows[1]
    assert all("-20.0 [" in r for r in red_rows)
    assert RED not in next(ln for ln in table.splitlines() if ln.startswith("| mc |"))
    html = (run / "report.html").read_text()
    assert html.count('class="num bad"') == 2
