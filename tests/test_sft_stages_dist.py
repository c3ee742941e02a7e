"""Every post-training stage (sft, dpo, rm, rl) from the command line: a run killed with SIGKILL
resumes with `--resume auto` to exactly the losses of an uninterrupted run, and each runs under
torchrun with 2 CPU ranks (sft, dpo and rm then equal 1 rank accumulating 2 micro-batches)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# fp32 without compile and one thread per process: only then are losses comparable bit for bit.
BASE = [
    "--data.corpus_mb=0.25",
    "--data.chat_train=300",
    "--data.chat_val=20",
    "--tokenizer.vocab_size=600",
    "--tokenizer.train_mb=0.2",
    "--model.depth=2",
    "--model.seq_len=256",
    "--run.dtype=float32",
]
STAGE_ARGS = {
    "sft": ["--synthetic", "200", "--sft.batch_size=4", "--sft.seq_len=160", "--sft.warmup_steps=2"],
    # These tests are about resuming and ranks: no early stop, no closing evaluation.
    "dpo": [
        *("--synthetic", "60", "--dpo.val_pairs=8", "--dpo.batch_size=2", "--dpo.seq_len=160"),
        *("--dpo.guard_tolerance=0", "--no-compare"),
    ],
    "rm": ["--synthetic", "60", "--rm.val_pairs=8", "--rm.batch_size=2", "--rm.seq_len=160"],
    "rl": [
        *("--rl.batch_size=2", "--rl.group_size=4", "--rl.max_new_tokens=12", "--rl.eval_problems=4"),
        *("--rl.guard_tolerance=0", "--no-compare"),
    ],
}
STEPS = {"sft": 12, "dpo": 12, "rm": 12, "rl": 6}


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "CHATSMITH_HOME": str(home), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def cmd(verb: str, name: str, *extra: str, torchrun: int = 0) -> list[str]:
    launcher = [sys.executable, "-m"]
    if torchrun:
        launcher += ["torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m"]
    return [*launcher, "chatsmith", verb, "--preset", "demo", *BASE, f"--run.name={name}", *extra]


def stage_cmd(verb: str, name: str, *extra: str, torchrun: int = 0) -> list[str]:
    n = STEPS[verb]
    common = [
        f"--{verb}.steps={n}",
        f"--{verb}.log_every=1",
        f"--{verb}.eval_every=1000",
        f"--{verb}.compile=off",
    ]
    return cmd(verb, name, *STAGE_ARGS[verb], *common, *extra, torchrun=torchrun)


def run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(args, env=env(home), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def losses(run_dir: Path, stage: str) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by SIGKILL
            continue
        if row["stage"] == stage and "train_loss" in row:
            out[row["step"]] = row["train_loss"]
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A run 'prep' with a tokenizer, a 1-step base model and a short SFT, copied into each test's run."""
    home = tmp_path_factory.mktemp("home")
    run(cmd("pretrain", "prep", "--pretrain.steps=1", "--run.threads=1", "--pretrain.compile=off"), home)
    run(stage_cmd("sft", "prep", "--sft.steps=8", "--run.threads=1"), home)
    return home


def new_run(home: Path, name: str) -> Path:
    r = home / "runs" / name
    for part in ("data", "tokenizer", "base", "sft"):
        shutil.copytree(home / "runs" / "prep" / part, r / part)
    return r


@pytest.mark.parametrize("verb", ["sft", "dpo", "rm", "rl"])
def test_sigkill_then_resume_auto_reproduces_the_losses(home: Path, verb: str) -> None:
    n = STEPS[verb]
    every = [f"--{verb}.ckpt_every={n // 3}", "--run.threads=1"]
    full, cut = new_run(home, f"{verb}_full"), new_run(home, f"{verb}_cut")
    if verb == "sft":  # train a fresh SFT, not the copied one
        shutil.rmtree(full / "sft")
        shutil.rmtree(cut / "sft")
    run(stage_cmd(verb, full.name, *every), home)

    p = subprocess.Popen(stage_cmd(verb, cut.name, *every), env=env(home), stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    kill_at = n // 3 + 2 if verb != "rl" else n // 3 * 2 + 1  # after a checkpoint, before the end
    for line in p.stdout:
        if f"step {kill_at}/{n}" in line:
            p.send_signal(signal.SIGKILL)
            break
    assert p.wait(timeout=120) == -signal.SIGKILL
    meta = json.loads((cut / verb / "meta.json").read_text())
    assert 0 < meta["step"] < n

    r = run(stage_cmd(verb, cut.name, *every, "--resume", "auto"), home)
    assert f"resuming from {cut / verb} at step {meta['step']}" in r.stdout
    a, b = losses(full, verb), losses(cut, verb)
    assert sorted(b) == list(range(1, n + 1)) and a == b
    assert (full / verb / "model.safetensors").read_bytes() == (cut / verb / "model.safetensors").read_bytes()
    if verb == "rm":  # the head is part of the result and equal too
        assert (
            json.loads((full / "rm" / "meta.json").read_text())["reward_head"]
            == json.loads((cut / "rm" / "meta.json").read_text())["reward_head"]
        )


@pytest.mark.parametrize("verb", ["sft", "dpo", "rm", "rl"])
def test_torchrun_two_cpu_ranks(home: Path, verb: str) -> None:
    two = new_run(home, f"{verb}_two")
    if verb == "sft":
        shutil.rmtree(two / "sft")
    r2 = run(stage_cmd(verb, two.name, torchrun=2), home)
    assert "2 rank(s) (ddp)" in r2.stdout
    assert (two / verb / "model.safetensors").is_file()
    if verb == "rl":
        return  # each rank samples its own rollouts, so 1 rank cannot match it step for step
    bs = {"sft": 4, "dpo": 2, "rm": 2}[verb]
    seq = 160
    one = new_run(home, f"{verb}_one")
    if verb == "sft":
        shutil.rmtree(one / "sft")
    acc = f"--{verb}.total_batch_tokens={2 * bs * seq}"
    run(stage_cmd(verb, one.name, acc, "--run.threads=1"), home)
    a, b = losses(one, verb), losses(two, verb)
    assert sorted(a) == sorted(b) == list(range(1, STEPS[verb] + 1))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-4, (a, b)
