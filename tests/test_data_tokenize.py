"""Tokenization: shards + manifest, multi-process equals single-process, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import DocShardWriter
from chatsmith.data.tokens.shards import open_shard
from chatsmith.data.tokens.tokenize_shards import read_manifest, tokenize_dir
from chatsmith.tokenizer.bpe import BPETokenizer

ROOT = Path(__file__).resolve().parents[1]


def write_docs(d: Path, texts: list[str], row_group: int, source: str = "s") -> None:
    w = DocShardWriter(d, shard_docs=len(texts) // 2 + 1, row_group=row_group)
    for i, t in enumerate(texts):
        w.add(t, source if i % 3 else "other", str(i))
    w.close()


def all_tokens(tok_dir: Path) -> list[int]:
    m = read_manifest(tok_dir)
    return [int(t) for s in m["shards"] for t in open_shard(tok_dir / s["file"], m["tokenizer"])]


@pytest.fixture()
def tok_path(tmp_path: Path, tiny_tok: BPETokenizer) -> Path:
    p = tmp_path / "tok" / "tokenizer.json"
    tiny_tok.save(p)
    return p


def test_tokenized_shards_hold_bos_plus_each_document(
    tmp_path: Path, tok_path: Path, tiny_corpus_texts: list[str]
) -> None:
    texts = [*tiny_corpus_texts[:200], "contains <|endoftext|> literally"]
    write_docs(tmp_path / "docs", texts, row_group=16)
    m = tokenize_dir(tok_path, tmp_path / "docs", tmp_path / "tok1", workers=1, quiet=True)
    tok = BPETokenizer.load(tok_path)
    ids = np.array(all_tokens(tmp_path / "tok1"))
    starts = np.flatnonzero(ids == tok.bos_id)
    assert len(starts) == m["documents"] == len(texts) and m["tokens"] == ids.size
    docs = np.split(ids, starts[1:])
    assert [tok.decode(d[1:].tolist()) for d in docs[:200]] == texts[:200]
    assert m["bos_in_text"] == 1  # the literal marker was taken out of the document
    assert m["sources"] == {"other": 67, "s": 134}
    assert m["bytes"] == sum(len(t.encode()) for t in texts)
    assert m["tokenizer"] == tok.fingerprint() and m["dtype"] == "uint16"
    # two processes give the same shards
    m2 = tokenize_dir(tok_path, tmp_path / "docs", tmp_path / "tok2", workers=2, quiet=True)
    assert {k: v for k, v in m2.items() if k != "docs_dir"} == {k: v for k, v in m.items() if k != "docs_dir"}
    assert all_tokens(tmp_path / "tok2") == ids.tolist()


def test_rerun_skips_done_shards_and_redoes_damaged_ones(
    tmp_path: Path, tok_path: Path, tiny_corpus_texts: list[str]
) -> None:
    write_docs(tmp_path / "docs", tiny_corpus_texts[:100], row_group=10)
    out = tmp_path / "tokens"
    ref = tokenize_dir(tok_path, tmp_path / "docs", out, workers=1, quiet=True)
    files = sorted(out.glob("docs_*.bin"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    files[0].with_suffix(".json").unlink()  # killed between the .bin and its .json
    files[1].write_bytes(files[1].read_bytes()[:-2])  # a damaged .bin
    (out / "docs_99999-00000.bin.tmp").write_bytes(b"junk")  # a killed writer's temporary file
    again = tokenize_dir(tok_path, tmp_path / "docs", out, workers=1, quiet=True)
    assert again == ref
    assert not list(out.glob("*.tmp"))
    assert all(f.stat().st_mtime_ns == mtimes[f] for f in files[2:])  # the rest were skipped


def test_interrupted_tokenization_resumes_to_the_same_manifest(
    tmp_path: Path, tok_path: Path, tiny_corpus_texts: list[str]
) -> None:
    texts = tiny_corpus_texts[:480]
    write_docs(tmp_path / "docs", texts, row_group=20)  # 24 chunks
    ref = tokenize_dir(tok_path, tmp_path / "docs", tmp_path / "ref", workers=1, quiet=True)

    out = tmp_path / "tokens"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import chatsmith.data.tokens.tokenize_shards as ts\n"
        "orig = ts.encode_docs\n"
        "def slow(tok, texts):\n"
        "    time.sleep(0.15)\n"
        "    return orig(tok, texts)\n"
        "ts.encode_docs = slow\n"
        "ts.tokenize_dir(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), workers=2, quiet=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tok_path), str(tmp_path / "docs"), str(out)],
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not list(out.glob("docs_*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers, at once
    proc.wait()
    done = len(list(out.glob("docs_*.json")))
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    assert 0 < done < 24 and not (out / "manifest.json").exists()

    resumed = tokenize_dir(tok_path, tmp_path / "docs", out, workers=2, quiet=True)
    for key in ("documents", "tokens", "bytes", "sources", "shards"):
        assert resumed[key] == ref[key], key
    assert resumed["documents"] == len(texts)
    assert all_tokens(out) == all_tokens(tmp_path / "ref")
    assert json.loads((out / "manifest.json").read_text()) == resumed


def test_clear_errors(tmp_path: Path, tok_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChatsmithError, match="holds no"):
        tokenize_dir(tok_path, tmp_path / "empty", tmp_path / "out", quiet=True)
    with pytest.raises(ChatsmithError, match="no tokenizer"):
        tokenize_dir(tmp_path / "nope.json", tmp_path / "empty", tmp_path / "out", quiet=True)
    with pytest.raises(ChatsmithError, match=r"manifest\.json"):
        read_manifest(tmp_path / "empty")
