"""The at-scale pretraining path, end to end on a corpus the test writes (parquet, JSONL and text,
over 5 MB, with near-duplicates and bad lines): `tokenizer train` -> `data prepare` -> `pretrain
--data.tokens` under torchrun with 2 ranks. 2 ranks equal 1 process; SIGKILL + --resume auto
equals an uninterrupted run; and the rows the run trained on hold every token of every document
exactly once per epoch (counted on the loader the run's checkpoint position belongs to)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from chatsmith.data.tokens.stream import BOSAlignedLoader

pytestmark = pytest.mark.slow

STOP = ["the", "and", "of", "to", "in", "is", "that", "with", "for", "was", "on", "as", "by", "at"]
SYL = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "zu", "ri", "fe", "gon", "bal", "tor"]
TINY = [
    "--model.depth=2", "--model.seq_len=128", "--pretrain.batch_size=4", "--pretrain.seq_len=64",
    "--pretrain.total_batch_tokens=512", "--pretrain.steps=20", "--pretrain.warmup_steps=2",
    "--pretrain.eval_every=10", "--pretrain.eval_batches=2", "--pretrain.log_every=1",
    "--pretrain.ckpt_every=5", "--pretrain.compile=off", "--run.dtype=float32", "--run.threads=1",
]  # fmt: skip


def prose(rng: random.Random, vocab: list[str], words: int) -> str:
    """Sentences that pass the quality rules: stop words among made-up words, full stops."""
    out = []
    while len(out) < words:
        sentence = [rng.choice(STOP if i % 3 == 1 else vocab) for i in range(rng.randint(6, 14))]
        out += [sentence[0].capitalize(), *sentence[1:-1], sentence[-1] + "."]
    return " ".join(out)


def write_corpus(d: Path) -> int:
    """Over 5 MB in three formats, with near-duplicate copies and bad JSONL lines; -> bytes."""
    rng = random.Random(0)
    vocab = sorted({"".join(rng.choice(SYL) for _ in range(rng.randint(2, 4))) for _ in range(3000)})
    docs = [prose(rng, vocab, rng.randint(150, 900)) for _ in range(1800)]
    docs += [d.replace(" the ", " a ", 1) for d in docs[:150]]  # near-duplicates
    rng.shuffle(docs)
    third = len(docs) // 3
    d.mkdir(parents=True)
    pq.write_table(pa.table({"text": docs[:third]}), d / "a.parquet")
    lines = [json.dumps({"text": t}) for t in docs[third : 2 * third]]
    lines[10:10] = ['{"text": "cut off', '{"title": "no text field"}', "not json at all"]
    (d / "b.jsonl").write_text("\n".join(lines) + "\n")
    (d / "c.txt").write_text("\n\n\n".join(docs[2 * third :]))
    return sum(f.stat().st_size for f in d.iterdir())


def cli(*args: str, ranks: int = 0) -> list[str]:
    launcher = [sys.executable, "-m"]
    if ranks:
        launcher += ["torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m"]
    return [*launcher, "chatsmith", *args]


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "CHATSMITH_HOME": str(home), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def run_ok(cmd: list[str], home: Path, timeout: int = 900) -> str:
    r = subprocess.run(cmd, env=env(home), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


def losses(run: Path) -> dict[int, float]:
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
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the token folder, CHATSMITH_HOME) after tokenizer train and data prepare."""
    root = tmp_path_factory.mktemp("realdata")
    assert write_corpus(root / "corpus") > 5_000_000
    out = run_ok(
        cli("tokenizer", "train", "--input", str(root / "corpus"), "--out", str(root / "tok"), "--skip-bad",
            "--tokenizer.vocab_size=700", "--tokenizer.train_mb=1.5"),
        root,
    )  # fmt: skip
    assert "MB) ->" in out and float(out.split("documents (")[1].split(" MB")[0]) <= 1.6
    run_ok(
        cli("data", "prepare", str(root / "corpus"), "--skip-bad", "--tokenizer", str(root / "tok"),
            "--out", str(root / "work")),
        root,
    )  # fmt: skip
    dedup = json.loads((root / "work" / "dedup" / "dedup_report.json").read_text())
    assert dedup["near_duplicates"] + dedup["exact_duplicates"] >= 100
    return root / "work" / "tokens", root


def pretrain(name: str, tok_dir: Path, *extra: str, ranks: int = 0) -> list[str]:
    return cli("pretrain", f"--data.tokens={tok_dir}", *TINY, f"--run.name={name}", *extra, ranks=ranks)


@pytest.mark.timeout(2400)
def test_two_ranks_equal_one_process_and_sigkill_resume_equals_uninterrupted(tokens: tuple) -> None:
    tok_dir, home = tokens
    one = run_ok(pretrain("one", tok_dir), home)
    two = run_ok(pretrain("two", tok_dir, ranks=2), home)
    assert "1 rank(s) (none), 2 micro-step(s)" in one and "2 rank(s) (ddp), 1 micro-step(s)" in two
    a, b = losses(home / "runs" / "one"), losses(home / "runs" / "two")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-4, (a, b)
    assert a[20] < a[1] - 0.3  # it learned: the comparison is not between two flat lines

    cmd = pretrain("cut", tok_dir, ranks=2)
    p = subprocess.Popen(cmd, env=env(home), stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        if "step 12/20" in line:  # past the checkpoint at step 10
            for pid in [*descendants(p.pid), p.pid]:
                os.kill(pid, signal.SIGKILL)
            break
    assert p.wait(timeout=60) == -signal.SIGKILL
    cut = home / "runs" / "cut"
    assert json.loads((cut / "base" / "meta.json").read_text())["step"] == 10
    out = run_ok(pretrain("cut", tok_dir, "--resume", "auto", ranks=2), home)
    assert f"resuming from {cut / 'base'} at step 10" in out
    assert losses(cut) == b  # exactly: weights, optimizer, loader position and RNG
    meta = json.loads((home / "runs" / "two" / "base" / "meta.json").read_text())
    assert json.loads((cut / "base" / "meta.json").read_text())["loader"] == meta["loader"]
    count_epoch(tok_dir, meta["loader"], steps=20)


def count_epoch(tok_dir: Path, final_state: dict, steps: int) -> None:
    """Two rank loaders as the run built them read, over its steps, the rows it trained on and end
    where its checkpoint says; then, to the end of epoch 0, every token of every training
    document comes exactly once, in order (counted from the loader's segments)."""
    ranks = [BOSAlignedLoader(tok_dir, 4, 64, r, 2, "train", 0.02, 1337) for r in range(2)]
    ref, counts = ranks[0], np.zeros(ranks[0].documents, np.int64)
    step = 0
    while ref.epoch == 0 or any(p[2] == 0 for p in ref.buffer):
        step += 1
        if step <= steps:  # the run's own rows: their tokens are the documents' tokens
            rows = torch.cat([torch.cat([x, y[:, -1:]], 1) for x, y in (ld.next_batch() for ld in ranks)])
            check_tokens(ref, rows.numpy())
            if step == steps:
                assert ref.state_dict() == ranks[1].state_dict() == final_state
        else:
            ref.next_batch()
        for segs in ref.last_segments:
            for doc, off, take, epoch in segs:
                if epoch == 0:
                    assert counts[doc] == off  # in order, none repeated or skipped
                    counts[doc] += take - (off > 0)
    assert np.array_equal(counts, ref.doc_len) and step > steps


def check_tokens(ref: BOSAlignedLoader, rows: np.ndarray) -> None:
    for row, segs in zip(rows, ref.last_segments):
        p = 0
        for doc, off, take, _ in segs:
            text = row[p + 1 : p + take] if off else row[p : p + take]
            assert row[p] == ref.bos and np.array_equal(text, ref.document(doc)[off : off + len(text)])
            p += take


@pytest.mark.timeout(2400)
def test_the_real_format_speedrun_on_the_cpu_preset_runs_end_to_end(tokens: tuple) -> None:
    """`speedrun --preset cpu` on the prepared token folder, every stage shrunk: pretrain on the
    folder (its tokenizer becomes the run's), then SFT, DPO, RM, RL, eval and the report."""
    tok_dir, home = tokens
    small = [
        "--model.depth=2", "--data.corpus_mb=0.25", "--data.chat_train=300", "--data.chat_val=20",
        "--pretrain.steps=10", "--pretrain.ckpt_every=0", "--sft.steps=10", "--dpo.steps=4",
        "--dpo.train_pairs=64", "--dpo.val_pairs=16", "--rm.steps=4", "--rm.train_pairs=64",
        "--rm.val_pairs=16", "--rl.steps=2", "--rl.batch_size=2", "--rl.group_size=2",
        "--rl.eval_problems=4", "--eval.arithmetic=4", "--eval.counting=4", "--eval.identity=2",
        "--eval.other=2", "--eval.base_limit=2", "--eval.max_new_tokens=16", "--run.threads=1",
    ]  # fmt: skip
    run_ok(cli("speedrun", "--preset", "cpu", f"--data.tokens={tok_dir}", *small), home, timeout=2300)
    run = home / "runs" / "cpu"
    assert (run / "report.md").is_file()
    for stage in ("base", "sft", "dpo", "rm", "rl"):
        assert (run / stage / "model.safetensors").is_file(), stage
    meta = json.loads((run / "base" / "meta.json").read_text())
    assert meta["data"] == str(tok_dir.resolve()) and meta["step"] == 10
    assert (run / "tokenizer" / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
