"""`chatsmith bench peak` and `chatsmith bench train` end with one JSON line of the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def bench(home: Path, *args: str) -> dict:
    env = {**os.environ, "CHATSMITH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "chatsmith", "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bench_peak_stores_what_it_measured(tmp_path: Path) -> None:
    r = bench(tmp_path, "peak", "--size", "256", "--seconds", "0.2", "--threads", "1")
    assert r["fp32_tflops"] > 0 and r["bf16_tflops"] > 0
    stored = json.loads((tmp_path / "peak.json").read_text())
    assert sorted(stored.values()) == pytest.approx(
        sorted(1e12 * r[k] for k in ("fp32_tflops", "bf16_tflops"))
    )


@pytest.mark.slow  # two fresh processes that import torch and train
def test_bench_train_compares_against_the_fp32_adamw_baseline(tmp_path: Path) -> None:
    tiny = ["model.depth=1", "tokenizer.vocab_size=256", "pretrain.batch_size=2", "pretrain.seq_len=32"]
    bench(tmp_path, "peak", "--size", "256", "--seconds", "0.2", "--threads", "1")  # stored, then reused
    args = ["train", "--preset", "demo", "--steps", "4", "--threads", "1", "--set", "pretrain.compile=off"]
    r = bench(tmp_path, *args, *[a for s in tiny for a in ("--set", s)])
    assert r["baseline"]["dtype"] == "float32" and r["baseline"]["optimizer"] == "adamw"
    assert r["chatsmith"]["optimizer"] == "muon"
    assert r["ratio_tok_per_s"] == r["chatsmith"]["tok_per_s"] / r["baseline"]["tok_per_s"]
    assert 0 < r["mfu"] < 1.5 and r["peak_mem_gb"] > 0
