"""Ingest: raw inputs (files, folders, Hugging Face datasets, HTTP(S) parquet URLs) -> document shards.

Each source argument becomes the `source` of its documents (a file's or folder's name, or a
URL's file name), so counts per source survive to the token manifest. URLs are downloaded first
(resumably, with checksums) into `downloads/` beside the output, then read like local files.
Empty documents are dropped and counted; bad files are an error naming the file, or, with
`skip_bad`, skipped and listed in `ingest_report.json`. No documents at all is always an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import DocShardWriter, write_json
from chatsmith.data.corpus.download import DownloadConfig, download, is_url, url_filename
from chatsmith.data.corpus.sources import BadInput, IngestCounts, expand_local, read_documents


def source_label(src: str) -> str:
    if is_url(src):
        return url_filename(src)
    p = Path(src).expanduser()
    return p.name or str(p)


def _fetch(
    srcs: list[str],
    download_dir: Path,
    sha256: list[str] | None,
    skip_bad: bool,
    counts: IngestCounts,
    cfg: DownloadConfig | None,
) -> dict[str, Path | None]:
    """Download every URL among srcs; sha256 digests are given in the order of the URLs."""
    urls = [s for s in srcs if is_url(s)]
    if sha256 and len(sha256) != len(urls):
        raise ChatsmithError(
            f"{len(sha256)} --sha256 digests given for {len(urls)} URLs; give one per URL, in order"
        )
    local: dict[str, Path | None] = {}
    for i, url in enumerate(urls):
        try:
            local[url] = download(url, download_dir / url_filename(url), sha256[i] if sha256 else None, cfg)
        except ChatsmithError as e:
            if not skip_bad:
                raise
            counts.skip_file(url, str(e))
            local[url] = None
    return local


def _plan(
    srcs: list[str], fetched: dict[str, Path | None], out_dir: Path, skip_bad: bool, counts: IngestCounts
) -> list[tuple[str, list[Path]]]:
    """Each source's files, listed before the writer clears out_dir, and none of them inside it."""
    out_abs = out_dir.resolve()
    plan: list[tuple[str, list[Path]]] = []
    for src in srcs:
        if is_url(src):
            path = fetched[src]
            plan.append((src, [path] if path is not None else []))
        else:
            files = expand_local(src, skip_bad, counts)
            plan.append((src, [f for f in files if not f.resolve().is_relative_to(out_abs)]))
    return plan


def _read_into(
    writer: DocShardWriter, src: str, path: Path, text_field: str, skip_bad: bool, counts: IngestCounts
) -> None:
    """One file's documents into the shards; a bad file raises, or with skip_bad is counted."""
    label = source_label(src)
    before = writer.documents
    root = Path(src).expanduser()
    name = str(path.relative_to(root)) if not is_url(src) and root.is_dir() and path != root else None
    try:
        for text, doc_id in read_documents(path, text_field, skip_bad, counts, name):
            if not text.strip():
                counts.empty_documents += 1
                continue
            writer.add(text, label, doc_id)
    except BadInput as e:
        if not skip_bad:
            raise
        added = writer.documents - before
        kept = f" (after {added} documents, which were kept)" if added else ""
        counts.skip_file(path, str(e) + kept)
        return
    counts.files += 1
    counts.by_source[label] = counts.by_source.get(label, 0) + writer.documents - before


def ingest(
    srcs: list[str],
    out_dir: Path,
    text_field: str = "text",
    skip_bad: bool = False,
    sha256: list[str] | None = None,
    download_dir: Path | None = None,
    download_cfg: DownloadConfig | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Read every source into document shards in out_dir; returns (and writes) the ingest report."""
    if not srcs:
        raise ChatsmithError("ingest: give at least one source (file, folder, dataset or URL)")
    out_dir = Path(out_dir)
    counts = IngestCounts()
    download_dir = download_dir or out_dir.parent / "downloads"
    fetched = _fetch(srcs, download_dir, sha256, skip_bad, counts, download_cfg)
    plan = _plan(srcs, fetched, out_dir, skip_bad, counts)
    writer = DocShardWriter(out_dir)
    for src, paths in plan:
        for path in paths:
            _read_into(writer, src, path, text_field, skip_bad, counts)
    writer.close()
    counts.documents, counts.bytes = writer.documents, writer.bytes
    report = counts.to_dict()
    write_json(out_dir / "ingest_report.json", report)
    if counts.documents == 0:
        skipped = "; ".join(f"{s['file']}: {s['reason']}" for s in counts.skipped_files[:3])
        why = f" (skipped: {skipped})" if skipped else ""
        raise ChatsmithError(f"ingest: no documents found in {', '.join(srcs)}{why}")
    if not quiet:
        log.info(
            f"ingest: {counts.documents} documents ({counts.bytes / 1e6:.1f} MB) "
            f"from {counts.files} files -> {out_dir}; {counts.empty_documents} empty, "
            f"{counts.skipped_records} bad records and "
            f"{len(counts.skipped_files)} bad files skipped"
        )
        for s in counts.skipped_files:
            log.warn(f"skipped {s['file']}: {s['reason']}")
    return report
