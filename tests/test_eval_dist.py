"""Sharded evaluation: two processes under torchrun give exactly the numbers of one process."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chatsmith.checkpoint import save_checkpoint
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig

WORDS = ["red", "blue", "green", "seven", "banana", "strawberry", "tokenizer", "answer", "dog", "fox"]


def make_checkpoint(path: Path, tok) -> None:
    cfg = GPTConfig(tok.vocab_size, 2, 64, 4, 2, 16, 128, 64)
    model = build_model(cfg, seed=0)
    with torch.no_grad():
        model.lm_head.weight.copy_(
            torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        )
    save_checkpoint(path, model, tok, {"stage": "sft", "step": 0})


def make_tasks(d: Path) -> list[str]:
    rng = random.Random(0)
    mc = [
        {"context": f"Q{i}: {rng.choice(WORDS)}?", "choices": rng.sample(WORDS, 3), "gold": rng.randrange(3)}
        for i in range(21)
    ]
    gen = [{"task": {"num_fewshot": 1, "max_new_tokens": 5, "temperature": 0.8}}]
    gen += [{"prompt": f"{rng.choice(WORDS)} {i} =", "answer": str(i)} for i in range(11)]
    chat = [{"task": {"max_new_tokens": 5}}]
    chat += [{"messages": [{"role": "user", "content": f"Say {w}."}], "answer": w} for w in WORDS[:5]]
    for name, rows in (("mc", mc), ("gen", gen), ("chat", chat)):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "held_out.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(400)))
    return [str(d / "mc.jsonl"), str(d / "gen.jsonl"), str(d / "chat.jsonl"), f"bpb:{d / 'held_out.txt'}"]


def strip_times(results: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in results.items()}


@pytest.mark.skipif(
    shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun"
)
def test_two_processes_equal_one(tmp_path, tiny_tok):
    make_checkpoint(tmp_path / "ckpt", tiny_tok)
    tasks = make_tasks(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHATSMITH_HOME": str(tmp_path / "home")}
    common = [
        "eval",
        "--model",
        str(tmp_path / "ckpt"),
        "--tasks",
        *tasks,
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    common += ["--no-cache", "--batch-tokens", "512"]
    one = subprocess.run(
        [sys.executable, "-m", "chatsmith", *common, "--out", str(tmp_path / "one.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert one.returncode == 0, one.stderr
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "chatsmith",
            *common,
            "--out",
            str(tmp_path / "two.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "one.json").read_text())
    r2 = json.loads((tmp_path / "two.json").read_text())
    assert set(r1) == {"mc", "gen", "chat", "bpb"}
    assert r1["mc"]["metrics"]["n"] == 21 and r1["bpb"]["metrics"]["tokens"] > 100
    assert strip_times(r1) == strip_times(r2)
