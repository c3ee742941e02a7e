"""A BOS-aligned pretraining loader over a token folder (`folder.py`; `chatsmith data tokenize`).

Every row of T+1 tokens starts with BOS (nanochat's BOS-aligned best-fit loader). A row is filled
from a small buffer of documents: the longest that still fits whole goes next; when none fits,
the shortest is cropped to fill the row exactly. Unlike nanochat, the cropped rest is not
dropped: it goes back into the buffer as a piece of its own, behind a BOS of its own, so an
epoch trains on every token of every document exactly once. No padding.

Distributed: every rank computes the same global stream of rows (cheap: lengths only) and
materialises its own slice, rows [r*B, (r+1)*B) of each global batch of W*B rows, so W ranks
together see exactly the batch one rank sees with batch size W*B, and the state after a step is
the same on every rank. `state_dict()` holds the epoch, the cursor and the buffer: a resumed run
continues with exactly the next batch. Validation documents are the folder's `"split": "val"`
shards where it has them; otherwise train and validation are split by a hash of each document's
tokens, so they never overlap, and identical copies of a document land on the same side.
`next_batch() -> (x, y)`, LongTensors of shape (B, T); `tokens_per_epoch` / `rows_per_epoch`
size an epoch for the whole world.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.tokens.doc_index import cached_doc_index, in_val
from chatsmith.data.tokens.folder import has_val_shards, read_manifest
from chatsmith.data.tokens.shards import open_shard


class BOSAlignedLoader:
    """Rows of T+1 tokens packed from documents, each row starting with BOS; resumable; rank-sliced."""

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
        self._index(tok_dir, m, val_fraction)
        if self.doc_len.size == 0:
            raise ChatsmithError(
                f"{tok_dir}: no documents in the {split} split (val_fraction={val_fraction})"
            )
        # The buffer holds pieces [document, offset, epoch]: offset 0 is a whole document, more is
        # the rest of a cropped one; the epoch is the one whose order brought the document in.
        self.epoch, self.cursor, self.rows = 0, 0, 0
        self.buffer: list[list[int]] = []
        self.last_segments: list[list[tuple[int, int, int, int]]] = []  # the last global batch's rows
        self._order_epoch, self._order = -1, np.zeros(0, np.int64)

    def _index(self, tok_dir: Path, m: dict[str, Any], val_fraction: float) -> None:
        """Memory-map the split's shards and gather their document index (no token is read)."""
        labeled = has_val_shards(m)
        self.arrays: list[np.ndarray] = []
        shard_ids, starts, lengths = [], [], []
        for s in m["shards"]:
            if not s["documents"] or (labeled and self.split not in ("all", s.get("split", "train"))):
                continue
            arr = open_shard(tok_dir / s["file"], m["tokenizer"])
            st, ln, h = cached_doc_index(tok_dir / s["file"], arr, self.bos)
            if labeled or self.split == "all":
                keep = np.ones(st.size, bool)
            else:
                keep = in_val(h, val_fraction) == (self.split == "val")
            shard_ids.append(np.full(int(keep.sum()), len(self.arrays), dtype=np.int32))
            starts.append(st[keep])
            lengths.append(ln[keep])
            self.arrays.append(arr)
        self.doc_shard = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        self.doc_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.doc_len = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)

    @property
    def documents(self) -> int:
        return int(self.doc_len.size)

    @property
    def tokens_per_epoch(self) -> int:
        """Tokens of this split, BOS included: what one epoch trains on, all ranks together."""
        return int(self.doc_len.sum())

    @property
    def rows_per_epoch(self) -> int:
        """Rows of T+1 tokens one epoch fills, all ranks together (each cropped document's rest
        adds one BOS, so an epoch may run a few rows past this)."""
        return math.ceil(self.tokens_per_epoch / (self.T + 1))

    @property
    def rows_per_batch(self) -> int:
        """Rows one next_batch() reads on this rank (train/loop.steps_from_epochs counts with it)."""
        return self.B

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
            self.buffer.append([int(self._order_of(self.epoch)[self.cursor]), 0, self.epoch])
            self.cursor += 1
            if self.cursor == self.documents:
                self.epoch, self.cursor = self.epoch + 1, 0

    def _next_row(self) -> list[tuple[int, int, int, int]]:
        """(document, offset, tokens, epoch) segments filling one row of T+1 tokens; a segment with
        an offset is BOS followed by tokens - 1 of the document's tokens from that offset."""
        need, segs = self.T + 1, []
        while need > 0:
            self._refill()
            lens = np.array([int(self.doc_len[d]) - o + (o > 0) for d, o, _ in self.buffer])
            fits = lens <= need
            if fits.any():  # best fit: the longest piece that fits whole
                i = int(np.argmax(np.where(fits, lens, -1)))
                take = int(lens[i])
            else:  # nothing fits: crop the shortest; its rest waits in the buffer
                i = int(np.argmin(lens))
                take = need
            doc, off, epoch = self.buffer.pop(i)
            segs.append((doc, off, take, epoch))
            end = off + take - (off > 0)
            if end < self.doc_len[doc]:
                self.buffer.append([doc, end, epoch])
            need -= take
        self.rows += 1
        return segs

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self._next_row() for _ in range(self.B * self.world)]
        self.last_segments = rows
        buf = np.empty((self.B, self.T + 1), dtype=np.int64)
        for r, segs in enumerate(rows[self.rank * self.B : (self.rank + 1) * self.B]):
            p = 0
            for doc, off, take, _ in segs:
                s, arr = int(self.doc_start[doc]) + off, self.arrays[self.doc_shard[doc]]
                if off:
                    buf[r, p] = self.bos
                    buf[r, p + 1 : p + take] = arr[s : s + take - 1]
                else:
                    buf[r, p : p + take] = arr[s : s + take]
                p += take
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "buffer": [list(p) for p in self.buffer],
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
        if any(not isinstance(p, list) or len(p) != 3 for p in state["buffer"]):
            raise ChatsmithError("loader state comes from an older loader: start the stage afresh")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.buffer, self.rows = [[int(v) for v in p] for p in state["buffer"]], int(state["rows"])
        self.seed = int(state["seed"])
