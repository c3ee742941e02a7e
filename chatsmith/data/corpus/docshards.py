"""Document shards: parquet files of normalized documents with `text`, `source` and `id` columns.

Every stage between raw input and tokens (ingest, clean, dedup) reads and writes this one
format, as FineWeb's datatrove pipeline does. Files are named `docs_00000.parquet`, ...; each
is written under a temporary name and renamed, so a crash never leaves a half shard. Row
groups are kept small (`ROW_GROUP` documents) because the tokenizer uses one row group as its
unit of work and of resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from chatsmith.common.errors import ChatsmithError

SCHEMA = pa.schema([("text", pa.string()), ("source", pa.string()), ("id", pa.string())])
ROW_GROUP = 2048  # documents per row group: the tokenizer's chunk
SHARD_DOCS = 65536  # documents per file
PATTERN = "docs_*.parquet"


class DocShardWriter:
    """Buffers documents and writes `docs_NNNNN.parquet` files of `shard_docs` rows each."""

    def __init__(self, out_dir: Path, shard_docs: int = SHARD_DOCS, row_group: int = ROW_GROUP) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stale = sorted(self.out_dir.glob(PATTERN))
        if stale:  # a re-run replaces the previous output instead of mixing with it
            for f in stale:
                f.unlink()
        self.shard_docs, self.row_group = shard_docs, row_group
        self.buf: dict[str, list[str]] = {"text": [], "source": [], "id": []}
        self.files: list[Path] = []
        self.documents = 0
        self.bytes = 0

    def add(self, text: str, source: str, doc_id: str) -> None:
        self.buf["text"].append(text)
        self.buf["source"].append(source)
        self.buf["id"].append(doc_id)
        self.documents += 1
        self.bytes += len(text.encode("utf-8", "surrogatepass"))
        if len(self.buf["text"]) >= self.shard_docs:
            self._flush()

    def add_batch(self, texts: list[str], sources: list[str], ids: list[str]) -> None:
        for t, s, i in zip(texts, sources, ids):
            self.add(t, s, i)

    def _flush(self) -> None:
        if not self.buf["text"]:
            return
        path = self.out_dir / f"docs_{len(self.files):05d}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        table = pa.table(self.buf, schema=SCHEMA)
        pq.write_table(table, tmp, row_group_size=self.row_group, compression="zstd")
        os.replace(tmp, path)
        self.files.append(path)
        self.buf = {"text": [], "source": [], "id": []}

    def close(self) -> list[Path]:
        self._flush()
        return self.files


def check_distinct(in_dir: Path, out_dir: Path, stage: str) -> None:
    """A stage rewrites its output folder, so it must not be its input folder."""
    if Path(in_dir).expanduser().resolve() == Path(out_dir).expanduser().resolve():
        raise ChatsmithError(f"{stage}: --out {out_dir} must be another folder than --in {in_dir}")


def list_doc_shards(in_dir: str | Path) -> list[Path]:
    """The document shards of a folder written by this module; none is an error naming the folder."""
    d = Path(in_dir).expanduser()
    if not d.is_dir():
        raise ChatsmithError(f"document folder {d} does not exist")
    files = sorted(d.glob(PATTERN))
    if not files:
        raise ChatsmithError(
            f"document folder {d} holds no {PATTERN} shards (run `chatsmith data ingest` first)"
        )
    return files


def row_groups(path: Path) -> int:
    try:
        return pq.ParquetFile(path).num_row_groups
    except (OSError, pa.ArrowException) as e:
        raise ChatsmithError(f"{path}: cannot read document shard ({e})") from None


def read_row_group(path: Path, index: int) -> dict[str, list[str]]:
    """One row group of a document shard as columns of Python strings."""
    try:
        t = pq.ParquetFile(path).read_row_group(index, columns=["text", "source", "id"])
    except (OSError, pa.ArrowException, KeyError) as e:
        raise ChatsmithError(f"{path}: cannot read document shard ({e})") from None
    return {name: t.column(name).to_pylist() for name in ("text", "source", "id")}


def iter_doc_batches(in_dir: str | Path) -> Iterator[dict[str, list[str]]]:
    """Every row group of every shard in a folder, in order."""
    for path in list_doc_shards(in_dir):
        for g in range(row_groups(path)):
            yield read_row_group(path, g)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Atomic JSON write (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
