"""Packed SFT rows: whole conversations packed into fixed-length rows, and their batches.

Both are deterministic functions of (data, seed, position); the loader exposes
`state_dict()` / `load_state_dict()` so a resumed run continues with exactly the batch
the interrupted run would have seen next.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from chatsmith.data.chat.epochs import EpochOrder


def pack_conversations(
    examples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pack whole conversations into rows of seq_len+1 ids; returns (ids, targets, dropped).

    A conversation never spans two rows (nothing of an answer is cut); one longer than a
    row is dropped and counted. Targets are the next token where it is trained, else -1.
    """
    rows_ids: list[list[int]] = []
    rows_mask: list[list[int]] = []
    cur_ids: list[int] = []
    cur_mask: list[int] = []
    dropped = 0
    L = seq_len + 1
    for ids, mask in examples:
        if len(ids) > L:
            dropped += 1
            continue
        if len(cur_ids) + len(ids) > L:
            rows_ids.append(cur_ids)
            rows_mask.append(cur_mask)
            cur_ids, cur_mask = [], []
        cur_ids = cur_ids + ids
        cur_mask = cur_mask + mask
    if cur_ids:
        rows_ids.append(cur_ids)
        rows_mask.append(cur_mask)
    ids_arr = np.full((len(rows_ids), L), pad_id, dtype=np.int64)
    tgt_arr = np.full((len(rows_ids), seq_len), -1, dtype=np.int64)
    for i, (r, m) in enumerate(zip(rows_ids, rows_mask)):
        ids_arr[i, : len(r)] = r
        m_arr = np.array(m[1:], dtype=bool)
        nxt = np.array(r[1:], dtype=np.int64)
        tgt_arr[i, : len(nxt)] = np.where(m_arr, nxt, -1)
    return ids_arr, tgt_arr, dropped


class SFTLoader:
    """Batches of packed conversation rows, reshuffled each epoch from the seed; rank r of W
    takes its own B rows of every step (chat.epochs), so the ranks see each row once an epoch."""

    def __init__(
        self, ids: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        if len(ids) == 0:
            raise ValueError("no conversations to train on")
        self.ids, self.targets, self.B, self.seed = (
            torch.from_numpy(ids),
            torch.from_numpy(targets),
            batch_size,
            seed,
        )
        self.rank, self.world = rank, world
        self.step = 0
        self.order = EpochOrder(len(ids), seed)

    @property
    def rows_per_epoch(self) -> int:
        """Rows in one pass over the data, for all ranks together."""
        return len(self.ids)

    @property
    def rows_per_batch(self) -> int:
        """Rows one rank reads per next_batch()."""
        return self.B

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        sel = torch.tensor(self.order.take(self.step, self.B, self.rank, self.world))
        self.step += 1
        return self.ids[sel, :-1], self.targets[sel]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
