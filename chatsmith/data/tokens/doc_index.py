"""Where each document of a token shard starts, how long it is, and a hash of its tokens.

Computed once per shard: by the writer right after it writes the shard (it has the tokens in
memory then), or by a reader that finds no index, and kept beside the shard (`NAME.index.npz`),
so a loader never scans a whole folder of shards (which would page every token into memory).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from chatsmith.common.errors import ChatsmithError

_BLOCK = 1 << 23  # tokens hashed at a time (bounds the memory of the vectorised hash)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def doc_index(arr: np.ndarray, bos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, lengths, content hashes) of the documents of one shard; each starts with BOS."""
    starts = np.flatnonzero(arr == bos).astype(np.int64)
    if arr.size and (starts.size == 0 or starts[0] != 0):
        raise ChatsmithError("token shard does not start with BOS: not a document-aligned shard")
    lengths = np.diff(np.append(starts, arr.size)).astype(np.int64)
    hashes = np.empty(starts.size, dtype=np.uint64)
    i = 0
    with np.errstate(over="ignore"):
        while i < starts.size:
            j = max(i + 1, int(np.searchsorted(starts, starts[i] + _BLOCK, side="right")) - 1)
            lo, hi = starts[i], starts[j - 1] + lengths[j - 1]
            toks = np.asarray(arr[lo:hi], dtype=np.uint64)
            pos = (np.arange(lo, hi, dtype=np.int64) - np.repeat(starts[i:j], lengths[i:j])).astype(np.uint64)
            x = _mix(toks ^ (pos << np.uint64(32)) ^ np.uint64(0x9E3779B97F4A7C15))
            hashes[i:j] = _mix(np.add.reduceat(x, starts[i:j] - lo) ^ lengths[i:j].astype(np.uint64))
            i = j
    return starts, lengths, hashes


def cached_doc_index(path: Path, arr: np.ndarray, bos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """doc_index, kept beside the shard (`NAME.index.npz`) so later runs and other ranks skip the scan.

    The cache records the shard's size and modification time; a re-tokenized shard is scanned
    again. A folder we cannot write to just means no cache.
    """
    cache = path.with_suffix(".index.npz")
    st = path.stat()
    stamp = np.array([st.st_size, st.st_mtime_ns, bos], dtype=np.int64)
    try:
        with np.load(cache) as z:
            if np.array_equal(z["stamp"], stamp):
                return z["starts"], z["lengths"], z["hashes"]
    except (OSError, ValueError, KeyError):
        pass
    starts, lengths, hashes = doc_index(arr, bos)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")  # ranks may race: each renames its own
    try:
        with open(tmp, "wb") as f:
            np.savez(f, stamp=stamp, starts=starts, lengths=lengths, hashes=hashes)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return starts, lengths, hashes


def in_val(hashes: np.ndarray, val_fraction: float) -> np.ndarray:
    """Whether each document belongs to the validation split (by its hash, so stable and disjoint)."""
    return (hashes % np.uint64(1_000_000)) < np.uint64(round(val_fraction * 1_000_000))
