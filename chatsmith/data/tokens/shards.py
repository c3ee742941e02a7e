"""Tokenized shards: a flat uint16/uint32 `.bin` of token ids plus a JSON manifest.

Each document is written as BOS followed by its tokens, so the loader can align
sequences to document starts. The manifest records the tokenizer's fingerprint: a shard
made by another tokenizer is refused instead of producing garbage. The writer also leaves the
shard's document index (`doc_index.py`) beside it, so no reader has to scan the tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.tokens.doc_index import cached_doc_index


def dtype_for(vocab_size: int) -> type:
    """uint16 while every id fits (ids < 65536), uint32 beyond."""
    return np.uint16 if vocab_size <= 65536 else np.uint32


def write_shard(
    path: Path,
    docs: Sequence[Sequence[int] | np.ndarray],
    bos_id: int,
    vocab_size: int,
    fingerprint: str,
    **extra: Any,
) -> dict[str, Any]:
    """Write docs (lists or arrays of ids) as one shard; atomic: a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dt = dtype_for(vocab_size)
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    flat = np.empty(int(lengths.sum()), dtype=dt)
    pos = 0
    for d in docs:
        flat[pos] = bos_id
        flat[pos + 1 : pos + 1 + len(d)] = d
        pos += len(d) + 1
    tmp = path.with_suffix(".bin.tmp")
    flat.tofile(tmp)
    os.replace(tmp, path)
    cached_doc_index(path, flat, bos_id)  # while the tokens are in memory: readers never scan
    manifest = {
        "file": path.name,
        "dtype": np.dtype(dt).name,
        "tokenizer": fingerprint,
        "documents": len(docs),
        "tokens": int(flat.size),
        "vocab_size": vocab_size,
        **extra,
    }
    mpath = path.with_suffix(".json")
    mpath.with_suffix(".json.tmp").write_text(json.dumps(manifest, indent=1))
    os.replace(mpath.with_suffix(".json.tmp"), mpath)
    return manifest


def open_shard(path: Path, fingerprint: str | None = None) -> np.ndarray:
    """Memory-map a shard after checking its manifest (and tokenizer, if given)."""
    mpath = path.with_suffix(".json")
    if not path.is_file() or not mpath.is_file():
        raise ChatsmithError(f"token shard {path} or its manifest is missing")
    manifest = json.loads(mpath.read_text())
    if fingerprint is not None and manifest["tokenizer"] != fingerprint:
        raise ChatsmithError(
            f"shard {path} was tokenized with tokenizer {manifest['tokenizer']}, "
            f"but this run uses {fingerprint}; re-tokenize the data"
        )
    arr = np.memmap(path, dtype=np.dtype(manifest["dtype"]), mode="r")
    if arr.size != manifest["tokens"]:
        raise ChatsmithError(f"shard {path} holds {arr.size} tokens, its manifest says {manifest['tokens']}")
    return arr
