"""Pretraining memory does not grow with the data: the loader memory-maps the shards and reads
each shard's document index, never the tokens themselves. Peak RSS of the same short run on a
400 MB token folder is within 100 MB of the peak on a 40 MB one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chatsmith.data.tokens.folder import finish_folder
from chatsmith.data.tokens.shards import write_shard
from chatsmith.tokenizer.bpe import BPETokenizer

pytestmark = pytest.mark.slow

SHARD_TOKENS = 20_000_000  # 40 MB of uint16


def write_folder(d: Path, tok: BPETokenizer, shards: int) -> None:
    """Random documents of 100-3000 tokens (ids of the tokenizer, BOS excluded), 40 MB a shard."""
    rng = np.random.default_rng(shards)
    manifests = []
    for i in range(shards):
        ids = rng.integers(0, tok.vocab_size, SHARD_TOKENS, dtype=np.uint16)
        ids[ids == tok.bos_id] = tok.bos_id + 1
        cuts = np.cumsum(rng.integers(100, 3000, SHARD_TOKENS // 100))
        docs = np.split(ids, cuts[cuts < SHARD_TOKENS - 3000])
        m = write_shard(d / f"docs_{i:05d}.bin", docs, tok.bos_id, tok.vocab_size, tok.fingerprint())
        manifests.append({**m, "bytes": 4 * m["tokens"]})
    finish_folder(d, tok, manifests)


def peak_rss_mb(tok_dir: Path, home: Path) -> float:
    """ru_maxrss of one `chatsmith pretrain` process on tok_dir (its own, by wait4)."""
    cmd = [
        sys.executable, "-m", "chatsmith", "pretrain", f"--data.tokens={tok_dir}",
        f"--run.name={tok_dir.name}",
        "--model.depth=2", "--model.seq_len=256", "--pretrain.batch_size=8", "--pretrain.seq_len=256",
        "--pretrain.steps=10", "--pretrain.eval_every=10", "--pretrain.eval_batches=2",
        "--pretrain.compile=off", "--run.dtype=float32", "--run.threads=1",
    ]  # fmt: skip
    env = {**os.environ, "CHATSMITH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    err = home / f"{tok_dir.name}.stderr"
    with open(err, "w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=f)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    assert p.returncode == 0, err.read_text()[-3000:]
    return usage.ru_maxrss / 1024  # kB on Linux


def test_peak_memory_does_not_grow_with_the_token_folder(
    tmp_path: Path, tiny_tok: BPETokenizer
) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    write_folder(small, tiny_tok, 1)
    write_folder(large, tiny_tok, 10)
    assert sum(f.stat().st_size for f in large.glob("*.bin")) >= 400e6
    a, b = peak_rss_mb(small, tmp_path), peak_rss_mb(large, tmp_path)
    print(f"peak RSS: 40 MB folder {a:.0f} MB, 400 MB folder {b:.0f} MB")
    assert abs(b - a) < 100, (a, b)
