"""Pretraining through the command line: torchrun with 2 ranks equals 1 rank, and a run killed
with SIGKILL resumes to exactly the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# A tiny model in fp32 without compile: bf16 autocast reorders sums, so only fp32 can be compared
# across process counts. One thread per process keeps the timing sane on a busy 2-core machine.
TINY = [
    "--data.corpus_mb=0.25",
    "--data.chat_train=400",
    "--data.chat_val=40",
    "--tokenizer.vocab_size=600",
    "--tokenizer.train_mb=0.2",
    "--model.depth=2",
    "--model.seq_len=128",
    "--pretrain.batch_size=4",
    "--pretrain.seq_len=64",
    "--pretrain.warmup_steps=2",
    "--pretrain.eval_every=10",
    "--pretrain.log_every=1",
    "--pretrain.compile=off",
    "--run.dtype=float32",
]


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "CHATSMITH_HOME": str(home), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def pretrain_cmd(name: str, *extra: str, torchrun: int = 0) -> list[str]:
    launcher = [sys.executable, "-m"]
    if torchrun:
        launcher += ["torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m"]
    return [*launcher, "chatsmith", "pretrain", "--preset", "demo", *TINY, f"--run.name={name}", *extra]


def losses(run: Path) -> dict[int, float]:
    """step -> train loss; a step logged twice (before a kill and after the resume) keeps the last."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by SIGKILL
            continue
        out[row["step"]] = row["train_loss"]
    return out


def descendants(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [d for k in map(int, kids) for d in [k, *descendants(k)]]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A home with the tiny corpus's tokenizer and shards, made once and copied into each run."""
    home = tmp_path_factory.mktemp("home")
    r = subprocess.run(
        pretrain_cmd("prep", "--pretrain.steps=1", "--run.threads=1"),
        env=env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return home


def new_run(home: Path, name: str) -> Path:
    run = home / "runs" / name
    for part in ("data", "tokenizer"):
        shutil.copytree(home / "runs" / "prep" / part, run / part)
    return run


def test_torchrun_two_ranks_match_one_rank(home: Path) -> None:
    # Same global batch: 1 rank accumulates 2 micro-batches of 4 rows, 2 ranks take 4 rows each.
    common = ["--pretrain.steps=20", "--pretrain.total_batch_tokens=512"]
    one, two = new_run(home, "one"), new_run(home, "two")
    r1 = subprocess.run(
        pretrain_cmd("one", *common, "--run.threads=1"),
        env=env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(
        pretrain_cmd("two", *common, torchrun=2), env=env(home), capture_output=True, text=True, timeout=300
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 rank(s) (ddp), 1 micro-step(s)" in r2.stdout
    assert "1 rank(s) (none), 2 micro-step(s)" in r1.stdout
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-4, (a, b)
    assert a[20] < a[1] - 0.3  # it learned something, so the comparison is not between two flat lines
    # Both read the same rows of the stream: 20 steps x 8 rows.
    meta1 = json.loads((one / "base" / "meta.json").read_text())
    meta2 = json.loads((two / "base" / "meta.json").read_text())
    assert meta1["loader"] == meta2["loader"] and meta1["loader"]["rows"] == 160


@pytest.mark.parametrize(
    "ranks,parallel",
    [(1, "auto"), pytest.param(2, "fsdp", marks=pytest.mark.slow)],
    ids=["one-process", "fsdp-2-ranks"],
)
def test_sigkill_then_resume_auto_reproduces_the_losses(home: Path, ranks: int, parallel: str) -> None:
    common = [
        "--pretrain.steps=30",
        "--pretrain.ckpt_every=5",
        "--run.threads=1",
        f"--run.parallel={parallel}",
    ]
    full, cut = new_run(home, f"full{ranks}"), new_run(home, f"cut{ranks}")
    r = subprocess.run(
        pretrain_cmd(f"full{ranks}", *common, torchrun=ranks if ranks > 1 else 0),
        env=env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr

    p = subprocess.Popen(
        pretrain_cmd(f"cut{ranks}", *common, torchrun=ranks if ranks > 1 else 0),
        env=env(home),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    for line in p.stdout:
        if "step 12/30" in line:  # past the checkpoint at step 10, before the end
            for pid in [*descendants(p.pid), p.pid]:  # torchrun's workers live in their own sessions
                os.kill(pid, signal.SIGKILL)
            break
    assert p.wait(timeout=60) == -signal.SIGKILL
    meta = json.loads((cut / "base" / "meta.json").read_text())
    assert 10 <= meta["step"] < 30 and meta["loader"]["rows"] == meta["step"] * 4 * ranks

    r = subprocess.run(
        pretrain_cmd(f"cut{ranks}", *common, "--resume", "auto", torchrun=ranks if ranks > 1 else 0),
        env=env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert f"resuming from {cut / 'base'} at step {meta['step']}" in r.stdout, r.stdout
    a, b = losses(full), losses(cut)
    assert sorted(b) == list(range(1, 31))
    assert a == b  # exactly: same weights, optimizer state, data position and RNG
    # The data loader neither repeated nor skipped rows: 30 steps of 4 rows per rank, as uninterrupted.
    assert json.loads((cut / "base" / "meta.json").read_text())["loader"]["rows"] == 120 * ranks
    assert (full / "base" / "model.safetensors").read_bytes() == (
        cut / "base" / "model.safetensors"
    ).read_bytes()
