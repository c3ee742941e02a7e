"""Data pipeline throughput: ingest+clean+dedup MB/s, and tokenization MB/s against a baseline.

The corpus is real text every machine has (the Python standard library's docstrings and
comments, `corpus/stdlib_corpus.py`), written as JSONL; the stdlib caps it (about 4.7 MB on Python 3.11),
and `corpus_mb` in the result says how much there was. The tokenization figure is the whole pipeline
stage (read parquet, encode in `workers` processes, write shards and manifests); the baseline
is the tokenizer library's own multi-threaded `encode_batch` on the same texts, already in
memory, in the same run. Their ratio is the figure of merit (goal >= 0.8). Each tokenization
timing is the best of `repeats` runs, which damps the noise of a shared machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from chatsmith.data.corpus.clean import clean_dir
from chatsmith.data.corpus.dedup import dedup_dir
from chatsmith.data.corpus.docshards import DocShardWriter, iter_doc_batches
from chatsmith.data.corpus.ingest import ingest
from chatsmith.data.corpus.stdlib_corpus import stdlib_documents
from chatsmith.data.tokens.tokenize_shards import tokenize_dir
from chatsmith.tokenizer.bpe import BPETokenizer


def _mb(n_bytes: int, seconds: float) -> float:
    return round(n_bytes / 1e6 / max(seconds, 1e-9), 3)


TOKENIZE_MB = 24.0


def bench_data(
    mb: float = 16.0,
    workers: int = 2,
    tokenizer: str | Path | None = None,
    vocab_size: int = 4096,
    repeats: int = 2,
    work_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the pipeline on about `mb` MB of text and return the throughput figures."""
    tmp = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="chatsmith-bench-data-"))
    try:
        return _bench(mb, workers, tokenizer, vocab_size, repeats, tmp, seed)
    finally:
        if work_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench(
    mb: float, workers: int, tokenizer: str | Path | None, vocab_size: int, repeats: int, tmp: Path, seed: int
) -> dict[str, Any]:
    docs = stdlib_documents(int(mb * 1e6), seed)
    corpus = _corpus_stages(docs, tmp)
    tok, tok_path = _tokenizer(docs, tokenizer, vocab_size, tmp)
    tokens = _tokenize_stage(tok, tok_path, workers, repeats, tmp)
    return {"bench": "data", **corpus, **tokens, "vocab_size": tok.vocab_size, "cpus": os.cpu_count()}


def _corpus_stages(docs: list[str], tmp: Path) -> dict[str, Any]:
    """Ingest, clean and dedup the documents (written as JSONL), each stage timed."""
    raw = tmp / "raw" / "stdlib.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    with open(raw, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"text": d, "id": f"stdlib-{i}"}, ensure_ascii=False) + "\n")
    raw_bytes = sum(len(d.encode()) for d in docs)

    t0 = time.perf_counter()
    ingest([str(raw)], tmp / "docs", quiet=True)
    t1 = time.perf_counter()
    cleaned = clean_dir(tmp / "docs", tmp / "clean", quiet=True)
    t2 = time.perf_counter()
    deduped = dedup_dir(tmp / "clean", tmp / "dedup", quiet=True)
    t3 = time.perf_counter()
    return {
        "corpus_mb": round(raw_bytes / 1e6, 3),
        "documents_in": len(docs),
        "documents_after_clean": cleaned["documents_out"],
        "documents_after_dedup": deduped["documents_out"],
        "ingest_mb_s": _mb(raw_bytes, t1 - t0),
        "clean_mb_s": _mb(raw_bytes, t2 - t1),
        "dedup_mb_s": _mb(cleaned["bytes_out"], t3 - t2),
        "ingest_clean_dedup_mb_s": _mb(raw_bytes, t3 - t0),
    }


def _tokenizer(
    docs: list[str], tokenizer: str | Path | None, vocab_size: int, tmp: Path
) -> tuple[BPETokenizer, Path]:
    """The given tokenizer, or one trained on an eighth of the documents."""
    if tokenizer is not None:
        return BPETokenizer.load(Path(tokenizer)), Path(tokenizer)
    tok = BPETokenizer.train(docs[: max(1, len(docs) // 8)], vocab_size=vocab_size)
    tok.save(tmp / "tokenizer.json")
    return tok, tmp / "tokenizer.json"


def _tokenize_stage(
    tok: BPETokenizer, tok_path: Path, workers: int, repeats: int, tmp: Path
) -> dict[str, Any]:
    """The tokenize stage's MB/s against the library's own encode_batch on the same texts."""
    texts = [t for b in iter_doc_batches(tmp / "dedup") for t in b["text"]]
    # Tokenization is timed on at least TOKENIZE_MB of text (the cleaned corpus, repeated):
    # on a few MB the pool's start-up, not the tokenizing, would be what gets measured.
    unique = list(texts)
    while sum(len(t.encode()) for t in texts) < TOKENIZE_MB * 1e6:
        texts += unique
    writer = DocShardWriter(tmp / "tokin")
    writer.add_batch(texts, ["bench"] * len(texts), [f"d{i}" for i in range(len(texts))])
    writer.close()
    tok_bytes = sum(len(t.encode()) for t in texts)

    tok.encode_batch(texts[:256])  # warm the library's thread pool
    base_s = min(_timed(lambda: tok.encode_batch(texts)) for _ in range(repeats))
    pipe_s = float("inf")
    manifest: dict[str, Any] = {}
    for r in range(repeats):
        out = tmp / f"tokens{r}"
        t = time.perf_counter()
        manifest = tokenize_dir(tok_path, tmp / "tokin", out, workers=workers, quiet=True)
        pipe_s = min(pipe_s, time.perf_counter() - t)
        shutil.rmtree(out, ignore_errors=True)

    pipe_mbs, base_mbs = _mb(tok_bytes, pipe_s), _mb(tok_bytes, base_s)
    return {
        "tokenize_mb": round(tok_bytes / 1e6, 3),
        "tokens": manifest.get("tokens", 0),
        "tokenize_workers": workers,
        "tokenize_pipeline_mb_s": pipe_mbs,
        "encode_batch_mb_s": base_mbs,
        "tokenize_ratio": round(pipe_mbs / max(base_mbs, 1e-9), 3),
        "goal_ratio": 0.8,
    }


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
