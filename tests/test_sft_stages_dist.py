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
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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


FILLER = "please answer this short question about the module and its tests"
ANSWER = {"role": "assistant", "content": "ok"}


def epoch_files(tmp: Path, verb: str, n: int) -> list[str]:
    """--data (n tagged rows: Parquet for SFT, a saved HF dataset for DPO, JSONL for RM and RL)
    and --val-data (2 held-out rows, JSONL) in the stage's format."""

    def rows(prefix: str, count: int) -> list[dict]:
        if verb == "sft":  # long enough that a packed row of 64 tokens holds one conversation
            return [
                {"messages": [{"role": "user", "content": f"{prefix} {i}] {FILLER}"}, ANSWER]}
                for i in range(count)
            ]
        if verb == "rl":
            return [{"prompt": f"{prefix} {i}] What is {i} + 1?", "answer": str(i + 1)} for i in range(count)]
        return [
            {"prompt": f"{prefix} {i}] Say yes.", "chosen": "yes", "rejected": "no"} for i in range(count)
        ]

    held = tmp / f"{verb}_held.jsonl"
    held.write_text("\n".join(json.dumps(r) for r in rows("[held", 2)) + "\n")
    train = tmp / f"{verb}_train.jsonl"
    table = pa.Table.from_pylist(rows("[row", n))
    if verb == "sft":  # SmolTalk's format
        train = tmp / "sft_train.parquet"
        pq.write_table(table, train)
    elif verb == "dpo":  # a folder written by datasets' save_to_disk
        train = tmp / "dpo_train"
        train.mkdir()
        with pa.OSFile(str(train / "data.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        (train / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data.arrow"}]}))
    else:
        train.write_text("\n".join(json.dumps(r) for r in table.to_pylist()) + "\n")
    return ["--data", str(train), "--val-data", str(held)]


EPOCH_ARGS = {
    "sft": ["--sft.batch_size=2", "--sft.seq_len=64", "--sft.warmup_steps=1"],
    "dpo": ["--dpo.batch_size=2", "--dpo.seq_len=64"],
    "rm": ["--rm.batch_size=2", "--rm.seq_len=64"],
    "rl": ["--rl.batch_size=2", "--rl.group_size=2", "--rl.max_new_tokens=4"],
}


@pytest.mark.parametrize("verb", ["sft", "dpo", "rm", "rl"])
def test_one_epoch_on_two_ranks_reads_every_row_once(home: Path, tmp_path: Path, verb: str) -> None:
    """epochs=1 under torchrun with 2 ranks: each row of the file reaches the loop exactly once
    (counted from the batches themselves), in the steps the loop logs."""
    n = 16
    run_ = new_run(home, f"{verb}_epoch")
    if verb == "sft":
        shutil.rmtree(run_ / "sft")
    args = [
        *epoch_files(tmp_path, verb, n),
        *EPOCH_ARGS[verb],
        f"--{verb}.epochs=1",
        f"--{verb}.eval_every=1000",
        f"--{verb}.compile=off",
    ]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    counter = str(Path(__file__).with_name("count_rows.py"))
    out = tmp_path / "rows"
    r = run([*launcher, counter, str(out), *cmd(verb, run_.name)[3:], *args], home)
    logged = [line for line in r.stdout.splitlines() if line.startswith(f"[{verb}]")]
    want = f"[{verb}] 1 epoch(s) of {n} rows, 4 rows per step (2 x 2 rank(s) x 1 micro-step(s)): 4 steps"
    assert want in logged, logged
    if verb == "sft":
        assert f"{n} conversations packed into {n} rows" in r.stdout
    seen = [json.loads(line) for f in sorted(out.glob("rank*.jsonl")) for line in f.read_text().splitlines()]
    assert {s["rank"] for s in seen} == {0, 1}
    counts = Counter(i for s in seen for i in s["rows"])
    assert counts == Counter(range(n)), counts
    assert len(losses(run_, verb)) == 4


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Ivy"]


def digit_task(tmp: Path) -> tuple[Path, Path, Path]:
    """A GSM8K-format task ("#### N" answers) of naming a digit, held out by the names asked
    about, and SFT data for a model that knows the right digit but prefers the next one
    (4 answers in 5), so greedy answers start low and sampling still finds the right one."""

    def task(path: Path, names: list[str]) -> Path:
        asked = [(f"{n} says {w}. Which digit is that?", str(d)) for n in names for d, w in enumerate(DIGITS)]
        rows = [{"prompt": q, "answer": a} for q, a in asked]
        lines = [{"task": {"name": "digits", "extract": "gsm8k"}}, *rows]
        path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
        return path

    train = task(tmp / "digits_train.jsonl", TRAIN_NAMES)
    held = task(tmp / "digits_held.jsonl", ["Quinn", "Rosa", "Sam", "Tina", "Uma"])
    sft = []
    for line in train.read_text().splitlines()[1:]:
        row = json.loads(line)
        for k in range(5):
            answer = {"role": "assistant", "content": f"#### {(int(row['answer']) + (k < 4)) % 10}"}
            sft.append({"messages": [{"role": "user", "content": row["prompt"]}, answer]})
    (tmp / "digits_sft.jsonl").write_text("\n".join(json.dumps(r) for r in sft) + "\n")
    return tmp / "digits_sft.jsonl", train, held


def test_rl_on_a_task_file_raises_the_held_out_exact_answer_rate(home: Path, tmp_path: Path) -> None:
    sft, train, held = digit_task(tmp_path)
    run_ = new_run(home, "digits")
    shutil.rmtree(run_ / "sft")
    one = ["--run.threads=1"]
    sft_args = ["--sft.epochs=3", "--sft.batch_size=8", "--sft.seq_len=64", "--sft.compile=off"]
    run(cmd("sft", run_.name, "--data", str(sft), "--val-data", str(sft), *sft_args, *one), home)
    rl_args = ["--rl.steps=30", "--rl.batch_size=8", "--rl.group_size=8", "--rl.max_new_tokens=6"]
    rl_args += ["--rl.lr=1e-3", "--rl.temperature=1.0", "--rl.eval_every=1000", "--rl.compile=off"]
    # The guard keeps general ability (the demo's conversations, held-out text); this model was
    # tuned on digits alone and has none to keep, so it would stop RL at once.
    rl_args += ["--rl.guard_tolerance=0"]
    r = run(cmd("rl", run_.name, "--data", str(train), "--val-data", str(held), *rl_args, *one), home)
    summary = json.loads((run_ / "rl_summary.json").read_text())
    print(f"held-out exact-answer rate {summary['accuracy_before']:.2f} -> {summary['accuracy_after']:.2f}")
    assert "[rl] task 'digits': 80 training prompts, 50 held out" in r.stdout
    assert summary["accuracy_before"] <= 0.25
    assert summary["accuracy_after"] >= summary["accuracy_before"] + 0.5


def test_rl_task_file_with_a_malformed_line_is_an_error_naming_it(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "gsm8k.jsonl"
    lines = [{"prompt": "1 + 1?", "answer": "2"}, {"prompt": "2 + 2?", "answer": "4"}, {"prompt": "3 + 3?"}]
    bad.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    r = subprocess.run(cmd("rl", "prep", "--data", str(bad)), env=env(home), capture_output=True, text=True)
    assert r.returncode != 0
    assert f"{bad}:3: missing field 'answer'" in r.stderr
