"""How much KV cache the engine may hold: the user's budget (tokens or bytes), or a default
from the machine's free memory, and the context length that goes with it.

The cache's slots are virtual (model/kv_cache.py): memory is taken only for the tokens held,
so the budget, not the number of slots times the context, is what bounds memory. The
scheduler admits requests against the budget and preempts the newest sequence when running
ones outgrow it (engine/scheduler.py), as vLLM does with its block pool.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatsmith.common.errors import ChatsmithError

if TYPE_CHECKING:  # torch stays unimported here: the CLI's flags come from this module
    import torch

    from chatsmith.model.gpt import GPT

DEFAULT_SHARE = 0.25  # of the memory available at start, at most, for the KV cache
DEFAULT_CAP = 8 << 30  # bytes: enough for hundreds of thousands of tokens of a small model
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}
_BYTES = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


def parse_size(text: str, base: int = 1) -> tuple[str, int]:
    """'64k' -> ('tokens', 64000), '8192' -> ('tokens', 8192), '1.5GB' -> ('bytes', ...).

    Token counts take k/m suffixes (k = 1000, as vLLM reads a lowercase k); bytes take
    B/KB/MB/GB/TB, binary (1 GB = 2**30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    if not m:
        raise ChatsmithError(f"cannot read the size {text!r}: give tokens (64k, 8192) or bytes (1.5GB)")
    num, unit = float(m.group(1)), m.group(2).lower()
    if unit in _UNITS:
        return "tokens", int(num * _UNITS[unit])
    if unit in _BYTES:
        return "bytes", int(num * _BYTES[unit])
    raise ChatsmithError(f"unknown unit {m.group(2)!r} in {text!r}: use k/m (tokens) or KB/MB/GB (bytes)")


def bytes_per_token(model: GPT, dtype: torch.dtype) -> int:
    """Keys and values of one token in every layer."""
    c = model.cfg
    return 2 * c.n_layer * c.n_kv_head * c.head_dim * dtype.itemsize


def available_memory() -> int:
    """Bytes the machine can give now (MemAvailable on Linux; else the total, halved)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass(frozen=True)
class KVPlan:
    """The cache the engine builds: budget_tokens held at most, contexts of up to context tokens."""

    budget_tokens: int
    context: int
    token_bytes: int

    @property
    def budget_bytes(self) -> int:
        return self.budget_tokens * self.token_bytes

    def describe(self) -> str:
        return (
            f"KV cache: up to {self.budget_tokens:,} tokens ({self.budget_bytes / 2**30:.2f} GiB), "
            f"context {self.context:,} tokens"
        )


def plan_kv(
    model: GPT,
    dtype: torch.dtype,
    budget: str | int | None = None,
    max_context: int | None = None,
    device: torch.device | None = None,
) -> KVPlan:
    """The budget (tokens as int, or text as `parse_size` reads it; None: at most a quarter of
    the memory available now, capped at 8 GiB) and the context length (None: the model's,
    or the budget if smaller). A budget must hold one whole context."""
    per = bytes_per_token(model, dtype)
    limit = model.cfg.seq_len
    if max_context is not None:
        if not 2 <= max_context <= limit:
            raise ChatsmithError(f"--max-context must be in [2, {limit}] (the model's), got {max_context}")
        limit = max_context
    if budget is None:
        free = available_memory() if device is None or device.type == "cpu" else _device_free(device)
        tokens = int(min(DEFAULT_SHARE * free, DEFAULT_CAP)) // per
        context = min(limit, tokens) if max_context is None else limit
        return KVPlan(max(tokens, context), context, per)
    kind, n = parse_size(budget) if isinstance(budget, str) else ("tokens", int(budget))
    tokens = n if kind == "tokens" else n // per
    context = min(limit, tokens) if max_context is None else limit
    if tokens < context or tokens < 2:
        raise ChatsmithError(
            f"a KV budget of {tokens:,} tokens ({tokens * per / 2**20:.1f} MiB) holds no context of "
            f"{context:,} tokens: raise the budget or lower --max-context"
        )
    return KVPlan(tokens, context, per)


def _device_free(device: torch.device) -> int:
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return free
    return available_memory()


def add_memory_flags(p: argparse.ArgumentParser) -> None:
    """--kv-budget and --max-context, as serve, chat and bench take them."""
    p.add_argument(
        "--kv-budget",
        default=None,
        help="most KV cache held: tokens (64k) or bytes (1.5GB); default: a quarter of the free "
        "memory, at most 8 GiB",
    )
    p.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="longest sequence in tokens (default: the model's, or the budget if smaller)",
    )


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """--threads, as serve, chat and the benches take it (common/cpu_share.py)."""
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (default 0: the cores other processes leave free at start-up)",
    )


def add_weights_flag(p: argparse.ArgumentParser) -> None:
    """--weights, as serve, chat, bench generate and eval take it (chatsmith.kernels.WEIGHTS);
    here, not in kernels, so that building the command line imports no torch."""
    p.add_argument(
        "--weights",
        choices=["bf16", "int8"],
        default="bf16",
        help="int8: 8-bit weight copies for CPU decoding (kernels/cpu/int8.py); bf16: the model's own",
    )
