"""Documents one at a time from any source the data commands read, for the tokenizer's trainer.

Folders, .txt/.md, .jsonl(.gz), .parquet (a document-shard folder from `chatsmith data ingest`
included) and saved Hugging Face datasets, through `sources.py`'s readers: parquet and Arrow in
row batches, so the memory held is one batch (a JSONL file at a time), never the corpus. Stops
after `max_bytes` of UTF-8 text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from chatsmith.data.corpus.sources import IngestCounts, expand_local, read_documents


def iter_texts(
    srcs: Sequence[str | Path], text_field: str = "text", max_bytes: int = 0, skip_bad: bool = False
) -> Iterator[str]:
    """Non-empty document texts of srcs, in order, until max_bytes (0: all) have been yielded."""
    counts, seen = IngestCounts(), 0
    for src in srcs:
        for path in expand_local(src, skip_bad, counts):
            for text, _ in read_documents(path, text_field, skip_bad, counts):
                if not text.strip():
                    continue
                yield text
                seen += len(text.encode("utf-8", "surrogatepass"))
                if max_bytes and seen >= max_bytes:
                    return


def batched(texts: Iterator[str], size: int = 256) -> Iterator[list[str]]:
    """Lists of up to `size` texts: the tokenizer's trainer takes batches faster than single texts."""
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
