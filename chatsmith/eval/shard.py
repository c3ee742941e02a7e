"""Splitting an evaluation between torchrun processes and putting the results back together.

Work is cut into fixed blocks of consecutive example indices and block b goes to rank
b % world. The blocks are the same for any number of processes, so every batch holds
the same examples in the same order, and the numbers are identical to one process.
Per-example records are gathered on every rank and sorted by index before any sum.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from chatsmith.common.dist import dist_info


def my_indices(n: int, block: int) -> list[int]:
    """The example indices this process evaluates."""
    info = dist_info()
    return [i for i in range(n) if (i // block) % info.world_size == info.rank]


def my_blocks(n: int, block: int) -> list[list[int]]:
    """my_indices, grouped by block: scoring batches never cross a block, so they are the
    same batches whatever the number of processes (float sums then agree to the last bit)."""
    out: dict[int, list[int]] = {}
    for i in my_indices(n, block):
        out.setdefault(i // block, []).append(i)
    return list(out.values())


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's records (each with an "index"), merged and sorted by index, on every rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        records = [r for part in parts for r in part]
    return sorted(records, key=lambda r: r["index"])
