"""Console logging, JSONL metrics and progress bars (rank 0 only under torchrun)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def info(msg: str) -> None:
    if is_main_process():
        print(msg, flush=True)


def warn(msg: str) -> None:
    if is_main_process():
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def progress(it: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar on rank 0 when stderr is a terminal or CHATSMITH_PROGRESS=1."""
    show = is_main_process() and (sys.stderr.isatty() or os.environ.get("CHATSMITH_PROGRESS") == "1")
    return iter(tqdm(it, total=total, desc=desc, disable=not show, leave=False, dynamic_ncols=True))


class MetricsLog:
    """Append-only JSONL of metric dicts; each line gets the stage and wall time."""

    def __init__(self, path: Path | None, stage: str) -> None:
        self.path, self.stage, self.t0 = path, stage, time.time()
        if path is not None and is_main_process():
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **metrics: Any) -> None:
        if self.path is None or not is_main_process():
            return
        row = {"stage": self.stage, "time": round(time.time() - self.t0, 3), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows
