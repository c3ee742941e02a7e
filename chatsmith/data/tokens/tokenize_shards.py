"""Tokenize document shards into token shards, in parallel, resumably.

The unit of work is one row group of one document shard (`docshards.ROW_GROUP` documents).
Each becomes one token shard in `shards.py`'s format (`docs_00000-00003.bin` + `.json`; every
document is BOS + its tokens), written by a `multiprocessing` worker that loads the tokenizer
from its tokenizer.json once. `write_shard` writes under a temporary name and renames, the
`.bin` before its `.json`, so a shard whose `.json` is there and agrees with its input and
tokenizer is complete. After a crash or a SIGKILL a re-run skips the complete shards and redoes
the rest; a copy of the tokenizer, then `manifest.json` (the sum over all shards; `folder.py`)
are written last. Nothing is counted twice or
lost, whatever the moment of the interruption.

A document's text could contain the BOS marker literally; its id is removed from the document's
tokens (and counted) so that BOS always and only marks a document start, which the loader relies on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from chatsmith.common import log
from chatsmith.data.corpus.docshards import (
    check_distinct,
    list_doc_shards,
    read_row_group,
    row_groups,
)
from chatsmith.data.tokens.folder import MANIFEST, finish_folder, read_manifest
from chatsmith.data.tokens.shards import write_shard
from chatsmith.tokenizer.bpe import BPETokenizer

__all__ = ["MANIFEST", "read_manifest", "tokenize_dir"]

_worker_tok: BPETokenizer | None = None


def tokenizer_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p / "tokenizer.json" if p.is_dir() else p


def _init_worker(tok_path: str) -> None:
    global _worker_tok
    _worker_tok = BPETokenizer.load(tok_path)


def encode_docs(tok: BPETokenizer, texts: list[str]) -> list[list[int]]:
    return tok.encode_batch(texts)


def _encode_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: tokenize one row group and write its shard; returns the shard's manifest."""
    tok = _worker_tok
    assert tok is not None, "worker not initialised"
    cols = read_row_group(Path(task["path"]), task["row_group"])
    docs = encode_docs(tok, cols["text"])
    bos, kept, sources = tok.bos_id, [], Counter()
    bos_in_text = empty = 0
    for d, src in zip(docs, cols["source"]):
        if bos in d:
            bos_in_text += d.count(bos)
            d = [t for t in d if t != bos]
        if not d:
            empty += 1
            continue
        kept.append(d)
        sources[src] += 1
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in cols["text"])
    return write_shard(
        Path(task["out"]),
        kept,
        bos,
        tok.vocab_size,
        tok.fingerprint(),
        input=task["input"],
        bytes=n_bytes,
        sources=dict(sources),
        empty_documents=empty,
        bos_in_text=bos_in_text,
    )


def plan_chunks(in_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    """One task per row group of every document shard, named after its input."""
    tasks = []
    for path in list_doc_shards(in_dir):
        st = path.stat()
        for g in range(row_groups(path)):
            tasks.append(
                {
                    "path": str(path),
                    "row_group": g,
                    "out": str(out_dir / f"{path.stem}-{g:05d}.bin"),
                    "input": {
                        "file": path.name,
                        "row_group": g,
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    },
                }
            )
    return tasks


def _complete(task: dict[str, Any], fingerprint: str) -> dict[str, Any] | None:
    """The shard's manifest if it was finished for this input and tokenizer, else None."""
    out = Path(task["out"])
    try:
        m = json.loads(out.with_suffix(".json").read_text())
        size = out.stat().st_size
    except (OSError, ValueError):
        return None
    if m.get("tokenizer") != fingerprint or m.get("input") != task["input"]:
        return None
    if size != m["tokens"] * np.dtype(m["dtype"]).itemsize:
        return None
    return m


def _remove_stale(out_dir: Path, tasks: list[dict[str, Any]]) -> None:
    """Temporary files of a killed run, and shards of inputs that are no longer there."""
    planned = {Path(t["out"]).stem for t in tasks}
    for f in out_dir.glob("docs_*"):
        stem = f.name.split(".")[0]
        if f.name.endswith(".tmp") or stem not in planned:
            f.unlink()


def _pool(workers: int, tok_path: Path) -> Any:
    """A worker pool; fork where available (fast start), with single-threaded tokenizers in workers."""
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    # Set while forking: each worker is one process on one core, and tokenizers then neither warns
    # about the fork nor uses its thread pool (whose threads do not survive a fork).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(str(tok_path),))
    finally:
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def tokenize_dir(
    tokenizer: str | Path, in_dir: Path, out_dir: Path, workers: int = 2, quiet: bool = False
) -> dict[str, Any]:
    """Tokenize the document shards of in_dir into out_dir; resumes; returns the manifest."""
    global _worker_tok
    tok_path = tokenizer_file(tokenizer)
    tok = BPETokenizer.load(tok_path)
    fp = tok.fingerprint()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_distinct(in_dir, out_dir, "tokenize")
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_chunks(in_dir, out_dir)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until every shard is done, no manifest claims otherwise
    _remove_stale(out_dir, tasks)
    done = {t["out"]: m for t in tasks if (m := _complete(t, fp)) is not None}
    pending = [t for t in tasks if t["out"] not in done]
    if not quiet:
        log.info(
            f"tokenize: {len(tasks)} chunks, {len(done)} already done, {len(pending)} to do, "
            f"{workers} worker(s)"
        )
    if workers > 1 and len(pending) > 1:
        with _pool(min(workers, len(pending)), tok_path) as pool:
            results = pool.imap_unordered(_encode_chunk, pending)
            for m in log.progress(results, total=len(pending), desc="tokenize"):
                done[str(out_dir / m["file"])] = m
    else:
        _worker_tok = tok
        for t in log.progress(pending, total=len(pending), desc="tokenize"):
            done[t["out"]] = _encode_chunk(t)
    manifests = [done[t["out"]] for t in tasks]
    manifest = finish_folder(out_dir, tok, manifests, docs_dir=str(in_dir.resolve()))
    if not quiet:
        text_tokens = max(1, manifest["tokens"] - manifest["documents"])
        log.info(
            f"tokenize: {manifest['documents']} documents, {manifest['tokens']} tokens "
            f"({manifest['bytes'] / text_tokens:.2f} bytes/token) "
            f"-> {out_dir}"
        )
    return manifest
