"""Rows of a conversation or preference data set, from any of the formats the ecosystem ships.

JSONL (`.jsonl`, `.jsonl.gz`, `.ndjson`: one JSON object a line), Parquet (SmolTalk,
UltraFeedback and most Hub data sets: one row a record, nested lists and structs as Python
lists and dicts), an Arrow file, or a folder written by `datasets`' `save_to_disk` (read with
pyarrow, so `datasets` is not needed). Each record comes with where it is, `file:line` for
JSONL and `file:row N` (1-based) for columnar files, so every problem names its place.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.sources import BadInput, _arrow_batches, hf_arrow_files, is_hf_dataset

FORMATS = "JSONL, Parquet, Arrow or a saved Hugging Face dataset folder"


def iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, the record or a ChatsmithError for a line that is not JSON) for every record."""
    name = path.name.lower()
    try:
        if is_hf_dataset(path):
            for f in hf_arrow_files(path):
                yield from _rows(f, _arrow_batches(f))
        elif name.endswith(".parquet"):
            yield from _rows(path, _parquet_batches(path))
        elif name.endswith(".arrow"):
            yield from _rows(path, _arrow_batches(path))
        elif path.is_file():
            yield from _jsonl(path)
        else:
            raise ChatsmithError(f"{path} is a folder but not a saved dataset; give a file ({FORMATS})")
    except BadInput as e:
        raise ChatsmithError(str(e)) from None


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        f = opener(path, "rt", encoding="utf-8")
    except OSError as e:
        raise ChatsmithError(f"cannot read {path}: {e.strerror}") from None
    with f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{n}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{n}", ChatsmithError(f"not valid JSON ({e.msg})")
        except (UnicodeDecodeError, OSError, EOFError) as e:
            raise ChatsmithError(f"{path}: not a UTF-8 JSONL file ({e}); expected {FORMATS}") from None


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=1024)
    except (OSError, pa.ArrowException) as e:
        raise ChatsmithError(f"{path}: not a readable parquet file ({e})") from None


def _rows(path: Path, batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[str, Any]]:
    row = 0
    for b in batches:
        for rec in b.to_pylist():
            row += 1
            yield f"{path}:row {row}", _drop_nulls(rec)


def _drop_nulls(v: Any) -> Any:
    """Columnar files store a field a record lacks as null (a struct has every field); JSON
    would have left it out, so leave it out too (a message with "tool_calls": null, say)."""
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v
