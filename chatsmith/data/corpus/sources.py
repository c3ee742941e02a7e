"""Read raw documents from local inputs: .txt/.md, .jsonl(.gz), .parquet, and Hugging Face datasets.

A Hugging Face dataset saved with `save_to_disk` is a folder of Arrow IPC stream files plus
`state.json` (or, for a DatasetDict, `dataset_dict.json` and one such folder per split); we read
those files with pyarrow directly, so `datasets` is not a dependency.

Every problem names its file. A bad file is a `ChatsmithError`; with `skip_bad` it is skipped and
recorded in `IngestCounts` instead, so a loss is never silent. A `.txt` file holds one document
per block separated by two blank lines (the convention of `text_files.py`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from chatsmith.common.errors import ChatsmithError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES + (".arrow",)
HF_MARKERS = ("state.json", "dataset_dict.json", "dataset_info.json")
BATCH = 4096  # rows read from a columnar file at a time


class BadInput(ChatsmithError):
    """A file that cannot be used; with skip_bad it is counted and skipped."""


@dataclass
class IngestCounts:
    files: int = 0
    documents: int = 0
    empty_documents: int = 0
    skipped_records: int = 0
    bytes: int = 0
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    by_source: dict[str, int] = field(default_factory=dict)

    def skip_file(self, path: Path | str, reason: str) -> None:
        self.skipped_files.append({"file": str(path), "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "documents": self.documents,
            "empty_documents": self.empty_documents,
            "skipped_records": self.skipped_records,
            "skipped_files": self.skipped_files,
            "bytes": self.bytes,
            "by_source": self.by_source,
        }


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    for s in ALL_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in HF_MARKERS)


def expand_local(src: str | Path, skip_bad: bool, counts: IngestCounts) -> list[Path]:
    """Files (or Hugging Face dataset folders) named by one source argument."""
    p = Path(src).expanduser()
    if not p.exists():
        return _bad([], p, "does not exist", skip_bad, counts)
    if p.is_file() or is_hf_dataset(p):
        return [p]
    files: list[Path] = []
    hf_roots: list[Path] = []
    for f in sorted(p.rglob("*")):
        if any(f.is_relative_to(r) for r in hf_roots):
            continue
        if is_hf_dataset(f):
            hf_roots.append(f)
            files.append(f)
        elif f.is_file() and suffix_of(f) in ALL_SUFFIXES and not f.name.endswith(".part"):
            files.append(f)
    if not files:
        return _bad([], p, f"folder holds no {', '.join(ALL_SUFFIXES)} files or datasets", skip_bad, counts)
    return files


def _bad(ret: list[Path], path: Path, reason: str, skip_bad: bool, counts: IngestCounts) -> list[Path]:
    if not skip_bad:
        raise BadInput(f"{path}: {reason}")
    counts.skip_file(path, reason)
    return ret


def read_documents(
    path: Path, text_field: str, skip_bad: bool, counts: IngestCounts, name: str | None = None
) -> Iterator[tuple[str, str]]:
    """(text, id) of every document in one file or dataset folder; raises BadInput naming the file.

    A document without an id of its own gets `NAME:N` (NAME defaults to the file's name).
    """
    name = name or path.name
    if is_hf_dataset(path):
        for f in hf_arrow_files(path):
            yield from _columnar(f, text_field, _arrow_batches(f), f"{name}/{f.relative_to(path)}")
        return
    suf = suffix_of(path)
    if suf in TEXT_SUFFIXES:
        yield from _text_file(path, name)
    elif suf in JSONL_SUFFIXES:
        yield from _jsonl_file(path, text_field, skip_bad, counts, name)
    elif suf in PARQUET_SUFFIXES:
        yield from _columnar(path, text_field, _parquet_batches(path, text_field), name)
    elif suf == ".arrow":
        yield from _columnar(path, text_field, _arrow_batches(path), name)
    else:
        raise BadInput(f"{path}: unsupported file type (use one of {', '.join(ALL_SUFFIXES)})")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror or e})") from None
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise BadInput(f"{path}: not a valid gzip file ({e})") from None
    return data


def _text_file(path: Path, name: str) -> Iterator[tuple[str, str]]:
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not valid UTF-8 (byte {e.start})") from None
    blocks = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n\n")]
    for n, b in enumerate(blocks):
        yield b, f"{name}:{n}"


def _jsonl_file(
    path: Path, text_field: str, skip_bad: bool, counts: IngestCounts, name: str
) -> Iterator[tuple[str, str]]:
    """Checks the whole file before yielding, so a bad file contributes nothing half-way."""
    docs: list[tuple[str, str]] = []
    for n, raw in enumerate(_read_bytes(path).split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            text = obj.get(text_field)
            if not isinstance(text, str):
                raise ValueError(f"no string field '{text_field}'")
        except UnicodeDecodeError as e:
            reason = f"not valid UTF-8 (byte {e.start} of the line)"
        except json.JSONDecodeError as e:
            reason = f"invalid JSON ({e.msg})"
        except ValueError as e:
            reason = str(e)
        else:
            doc_id = obj.get("id")
            docs.append((text, str(doc_id) if doc_id is not None else f"{name}:{n}"))
            continue
        if not skip_bad:
            raise BadInput(f"{path}:{n}: {reason}")
        counts.skipped_records += 1
    yield from docs


def _parquet_batches(path: Path, text_field: str) -> Iterator[pa.RecordBatch]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise BadInput(f"{path}: not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise BadInput(
            f"{path}: no column '{text_field}' (columns: {', '.join(names)}); choose one with --text-field"
        )
    cols = [text_field] + (["id"] if "id" in names and text_field != "id" else [])
    try:
        yield from pf.iter_batches(batch_size=BATCH, columns=cols)
    except (OSError, pa.ArrowException) as e:
        raise BadInput(f"{path}: cannot read parquet data ({e})") from None


def hf_arrow_files(root: Path) -> list[Path]:
    """The Arrow files of a `save_to_disk` folder, in the order `state.json` lists them."""
    dd = root / "dataset_dict.json"
    if dd.is_file():
        try:
            splits = json.loads(dd.read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadInput(f"{dd}: not a valid dataset_dict.json ({e})") from None
        return [f for s in splits for f in hf_arrow_files(root / s)]
    state = root / "state.json"
    files: list[Path] = []
    if state.is_file():
        try:
            files = [root / d["filename"] for d in json.loads(state.read_text())["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadInput(f"{state}: not a valid datasets state.json ({e})") from None
    files = files or sorted(root.glob("*.arrow"))
    if not files:
        raise BadInput(f"{root}: Hugging Face dataset folder holds no .arrow files")
    return files


def _arrow_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """`datasets` writes the IPC stream format; plain Arrow files use the file format."""
    try:
        source = pa.memory_map(str(path))
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        try:
            reader: Any = pa.ipc.open_stream(source)
            batches = iter(reader)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        yield from batches
    except (OSError, pa.ArrowException) as e:
        raise BadInput(f"{path}: not a readable Arrow file ({e})") from None


def _columnar(
    path: Path, text_field: str, batches: Iterator[pa.RecordBatch], label: str
) -> Iterator[tuple[str, str]]:
    row = 0
    for b in batches:
        names = b.schema.names
        if text_field not in names:
            raise BadInput(
                f"{path}: no column '{text_field}' (columns: {', '.join(names)}); "
                "choose one with --text-field"
            )
        col = b.column(names.index(text_field))
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise BadInput(f"{path}: column '{text_field}' holds {col.type}, not text")
        try:
            texts = col.to_pylist()
        except UnicodeDecodeError as e:
            raise BadInput(f"{path}: column '{text_field}' is not valid UTF-8 (byte {e.start})") from None
        ids = b.column(names.index("id")).to_pylist() if "id" in names and text_field != "id" else None
        for i, t in enumerate(texts):
            doc_id = ids[i] if ids is not None and ids[i] is not None else f"{label}:{row + i}"
            yield (t or ""), str(doc_id)
        row += len(texts)
