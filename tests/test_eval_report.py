"""Every stage of a run on bpb and the demo's tasks, and the report card written from it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from chatsmith.checkpoint import save_checkpoint
from chatsmith.data.tokens.shards import write_shard
from chatsmith.eval.report import write_report
from chatsmith.eval.runner import EvalSettings, evaluate_stages
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig

DEMO_TASKS = ["bpb", "arith_calc", "arith_direct", "chat", "mc", "mc_chat", "word_problems_unseen"]
WORDS = [
    "apple",
    "banana",
    "cherry",
    "letter",
    "count",
    "strawberry",
    "tokenizer",
    "model",
    "answer",
    "python",
    "module",
    "function",
    "string",
    "number",
    "window",
    "record",
    "object",
    "return",
    "value",
    "import",
    "class",
    "method",
    "system",
    "file",
    "error",
    "thread",
    "socket",
    "buffer",
    "stream",
    "parser",
    "header",
    "format",
    "option",
    "default",
    "result",
    "signal",
    "process",
]


@pytest.fixture()
def tiny_run(tmp_path, tiny_tok):
    run = tmp_path / "tinyrun"
    cfg = {
        "run": {"seed": 7},
        "identity": {"name": "chatsmith", "maker": "the chatsmith team"},
        "eval": {"arithmetic": 4, "counting": 4, "identity": 2, "other": 2, "max_new_tokens": 6},
    }
    (run / "data").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "data" / "words.json").write_text(json.dumps(WORDS))
    docs = ["The quick brown fox jumps over the lazy dog. " * 5, "def add(a, b):\n    return a + b\n" * 4]
    write_shard(
        run / "data" / "pretrain_val.bin",
        tiny_tok.encode_batch(docs),
        tiny_tok.bos_id,
        tiny_tok.vocab_size,
        tiny_tok.fingerprint(),
        bytes=sum(len(d.encode()) for d in docs),
    )
    for seed, stage in enumerate(("base", "sft")):
        model = build_model(GPTConfig(tiny_tok.vocab_size, 1, 32, 2, 2, 16, 64, 128), seed=seed)
        save_checkpoint(run / stage, model, tiny_tok, {"stage": stage, "step": 1})
    rows = [
        {"stage": s, "time": t, "step": t, "train_loss": 5.0 - t / 10, "lr": 1e-3}
        for s in ("pretrain", "sft")
        for t in range(1, 6)
    ]
    rows += [
        {"stage": "pretrain", "time": 5.0, "step": 5, "train_loss": 4.5, "val_loss": 4.6, "val_bpb": 2.1}
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def strip_times(res: dict) -> dict:
    return {s: {t: r["metrics"] for t, r in v["tasks"].items()} for s, v in res.items()}


def test_every_stage_gets_every_task_reproducibly(tiny_run):
    st = EvalSettings(limit=4, max_new_tokens=8)
    first = evaluate_stages(tiny_run, None, "cpu", torch.float32, st, use_cache=False)
    assert list(first) == ["base", "sft"]
    for stage in first.values():
        assert sorted(stage["tasks"]) == sorted(DEMO_TASKS)
        assert 0 < stage["tasks"]["bpb"]["metrics"]["bpb"] < 20
    again = evaluate_stages(tiny_run, None, "cpu", torch.float32, st)  # computes again, fills the cache
    assert strip_times(again) == strip_times(first)
    assert not any(r.get("cached") for v in again.values() for r in v["tasks"].values())
    cached = evaluate_stages(tiny_run, None, "cpu", torch.float32, st)  # reads it
    assert all(r.get("cached") for v in cached.values() for r in v["tasks"].values())
    assert strip_times(cached) == strip_times(first)
    assert json.loads((tiny_run / "eval" / "results.json").read_text()).keys() == first.keys()


def test_report_card_markdown_and_html(tiny_run):
    results = evaluate_stages(tiny_run, None, "cpu", torch.float32, EvalSettings(limit=2, max_new_tokens=8))
    summary = {
        "timings": {"data": 1.0, "pretrain": 12.5, "sft": 20.0, "eval": 3.0},
        "stages": {"pretrain": {"train_loss": 4.5, "val_bpb": 2.1}, "sft": {"train_loss": 1.2}},
        "evals": results,
        "setup": {"seed": 7},
    }
    md_path = write_report(tiny_run, summary)
    md = md_path.read_text()
    header = next(line for line in md.splitlines() if line.startswith("| task | metric"))
    assert header.endswith("| base | sft |")
    for task in DEMO_TASKS:
        row = next(line for line in md.splitlines() if line.startswith(f"| {task} |"))
        assert "–" not in row, f"{task} lacks a figure for some stage: {row}"
    for png in ("loss.png", "metrics.png", "tasks.png"):
        assert (tiny_run / png).stat().st_size > 1000
        assert f"]({png})" in md
    assert "torch" in md and "pretrain" in md and "12.5" in md
    html = (tiny_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=["'](?!data:)""", html), "the page must not load anything"
    assert "<table>" in html and "sft" in html
    # `chatsmith report RUN` rebuilds the same card from what the run folder holds.
    (tiny_run / "report.md").unlink()
    write_report(tiny_run)
    assert (tiny_run / "report.md").read_text() == md


def test_report_accepts_the_older_chat_eval_form(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    evals = {
        "sft": {
            "accuracy": {"arithmetic": 0.5, "counting": 0.25},
            "counts": {"arithmetic": 2, "counting": 4},
            "samples": {"arithmetic": [{"question": "1+1?", "reply": "2", "tools": ["2"], "ok": True}]},
        }
    }
    md = write_report(run, {"timings": {"sft": 3.0}, "evals": evals}).read_text()
    assert "accuracy/arithmetic | 50.0" in md and "accuracy/counting | 25.0" in md
    assert "1+1?" in md
