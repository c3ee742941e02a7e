"""A BOS-aligned pretraining loader over a folder of token shards (`tokenize_shards.py`'s output).

Every row of T+1 tokens starts at a document boundary, with BOS, so the model never sees text
whose beginning was cut off (nanochat's BOS-aligned best-fit loader). A row is filled from a small
buffer of documents: the longest that still fits whole goes next; when none fits, the shortest
is cropped to fill the row exactly and its rest is dropped. No padding, little cropping.

Distributed: every rank computes the same global stream of rows (cheap: lengths only) and
materialises its own slice, rows [r*B, (r+1)*B) of each global batch of W*B rows, so W ranks
together see exactly the batch one rank sees with batch size W*B, and the state after a step is
the same on every rank. `state_dict()` holds the epoch, the cursor and the buffer: a resumed run
continues with exactly the next batch. Train and validation documents are split by a hash of
their tokens, so they never overlap, and identical copies of a document land on the same side.
Interface as `loaders.PretrainLoader`: `next_batch() -> (x, y)`, LongTensors of shape (B, T).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.tokens.shards import open_shard
from chatsmith.data.tokens.tokenize_shards import read_manifest

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


class BOSAlignedLoader:
    """Rows of T+1 tokens packed from whole documents, each starting with BOS; resumable; rank-sliced."""

    def __init__(
        self,
        tok_dir: str | Path,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world: int = 1,
        split: str = "train",
        val_fraction: float = 0.01,
        seed: int = 0,
        buffer_size: int = 64,
        fingerprint: str | None = None,
    ) -> None:
        if split not in ("train", "val", "all"):
            raise ChatsmithError(f"split must be train, val or all (got {split!r})")
        if not 0 <= rank < world:
            raise ChatsmithError(f"rank {rank} is outside world size {world}")
        tok_dir = Path(tok_dir).expanduser()
        m = read_manifest(tok_dir)
        if fingerprint is not None and m["tokenizer"] != fingerprint:
            raise ChatsmithError(
                f"{tok_dir} was tokenized with tokenizer {m['tokenizer']}, "
                f"but this run uses {fingerprint}; re-tokenize the data"
            )
        self.B, self.T, self.rank, self.world = batch_size, seq_len, rank, world
        self.seed, self.buffer_size, self.split = seed, buffer_size, split
        self.bos = int(m["bos_id"])
        self.arrays: list[np.ndarray] = []
        shard_ids, starts, lengths = [], [], []
        for s in m["shards"]:
            if not s["documents"]:
                continue
            arr = open_shard(tok_dir / s["file"], m["tokenizer"])
            st, ln, h = cached_doc_index(tok_dir / s["file"], arr, self.bos)
            keep = np.ones(st.size, bool) if split == "all" else in_val(h, val_fraction) == (split == "val")
            shard_ids.append(np.full(int(keep.sum()), len(self.arrays), dtype=np.int32))
            starts.append(st[keep])
            lengths.append(ln[keep])
            self.arrays.append(arr)
        self.doc_shard = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        self.doc_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.doc_len = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        if self.doc_len.size == 0:
            raise ChatsmithError(
                f"{tok_dir}: no documents in the {split} split (val_fraction={val_fraction})"
            )
        self.epoch, self.cursor, self.buffer, self.rows = 0, 0, [], 0
        self._order_epoch, self._order = -1, np.zeros(0, np.int64)

    @property
    def documents(self) -> int:
        return int(self.doc_len.size)

    def document(self, i: int) -> np.ndarray:
        """The tokens (BOS first) of document i of this split."""
        s = int(self.doc_start[i])
        return np.asarray(self.arrays[self.doc_shard[i]][s : s + int(self.doc_len[i])])

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.documents)
            self._order_epoch = epoch
        return self._order

    def _refill(self) -> None:
        while len(self.buffer) < self.buffer_size:
            self.buffer.append(int(self._order_of(self.epoch)[self.cursor]))
            self.cursor += 1
            if self.cursor == self.documents:
                self.epoch, self.cursor = self.epoch + 1, 0

    def _next_row(self) -> list[tuple[int, int]]:
        """(document, tokens taken from its start) segments filling one row of T+1 tokens."""
        need, segs = self.T + 1, []
        while need > 0:
            self._refill()
            lens = self.doc_len[self.buffer]
            fits = lens <= need
            if fits.any():  # best fit: the longest whole document that fits
                i = int(np.argmax(np.where(fits, lens, -1)))
                take = int(lens[i])
            else:  # nothing fits: crop the shortest, losing the least text
                i = int(np.argmin(lens))
                take = need
            segs.append((self.buffer.pop(i), take))
            need -= take
        self.rows += 1
        return segs

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self._next_row() for _ in range(self.B * self.world)]
        buf = np.empty((self.B, self.T + 1), dtype=np.int64)
        for r, segs in enumerate(rows[self.rank * self.B : (self.rank + 1) * self.B]):
            p = 0
            for doc, take in segs:
                s = int(self.doc_start[doc])
                buf[r, p : p + take] = self.arrays[self.doc_shard[doc]][s : s + take]
                p += take
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "buffer": list(self.buffer),
            "rows": self.rows,
            "documents": self.documents,
            "seed": self.seed,
            "split": self.split,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("documents") != self.documents or state.get("split") != self.split:
            raise ChatsmithError(
                f"loader state is for {state.get('documents')} {state.get('split')} documents, "
                f"but the data has {self.documents} {self.split} documents: "
                "resume with the data the run started with"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.buffer, self.rows = [int(b) for b in state["buffer"]], int(state["rows"])
        self.seed = int(state["seed"])
