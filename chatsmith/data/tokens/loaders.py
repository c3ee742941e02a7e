"""Consecutive token rows from one in-memory token array: the training benchmark's and the
training loop tests' loader. Pretraining itself streams token folders (`stream.py`).

A deterministic function of (tokens, position), with `state_dict()` / `load_state_dict()`
so a resumed run continues with exactly the batch the interrupted run would have seen next.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class PretrainLoader:
    """Reads B rows of T+1 consecutive tokens per step from a memory-mapped shard.

    Rows tile the token stream in order (wrapping at the end), so one pass sees every
    token once. Rank r of W takes every W-th row, so ranks never share data.
    """

    def __init__(
        self, tokens: np.ndarray, batch_size: int, seq_len: int, rank: int = 0, world: int = 1
    ) -> None:
        if tokens.size < seq_len + 2:
            raise ValueError(f"only {tokens.size} tokens; need more than seq_len+1 = {seq_len + 1}")
        self.tokens, self.B, self.T, self.rank, self.world = tokens, batch_size, seq_len, rank, world
        self.n_rows = (tokens.size - 1) // seq_len
        self.row = 0  # global row index of the next batch (all ranks together)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [(self.row + self.rank + self.world * i) % self.n_rows for i in range(self.B)]
        self.row += self.B * self.world
        buf = np.stack([self.tokens[r * self.T : r * self.T + self.T + 1] for r in rows]).astype(np.int64)
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"row": self.row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.row = int(state["row"])
