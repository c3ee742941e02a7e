"""Clean document shards: normalize, strip boilerplate and pinyin glosses, drop low-quality documents.

Per document, in order: Unicode NFC; control characters out (newlines and tabs stay, CRLF -> LF);
boilerplate notices and pinyin glosses out (`boilerplate.py`); whitespace tidied; then the
Gopher-style quality rules (`quality.py`) decide whether it stays. Every change and every removal
is counted by its rule in `clean_report.json`, and a short table goes to the console, so nothing
disappears unexplained.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatsmith.common import log
from chatsmith.data.corpus.boilerplate import strip_boilerplate, strip_pinyin
from chatsmith.data.corpus.docshards import (
    DocShardWriter,
    check_distinct,
    list_doc_shards,
    read_row_group,
    row_groups,
    write_json,
)
from chatsmith.data.corpus.quality import QualityConfig, quality_issue

# C0 and C1 controls except \t and \n, plus zero-width and bidi marks and stray BOMs.
_CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    r"\u200b\u200e\u200f\u202a-\u202e\u2060\ufeff\ufffe]"
)
_TRAILING_WS = re.compile(r"[ \t\u3000]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")


@dataclass
class CleanConfig:
    nfc: bool = True
    control_chars: bool = True
    boilerplate: bool = True
    pinyin: bool = True
    quality: bool = True  # apply the Gopher-style rules below
    rules: QualityConfig = field(default_factory=QualityConfig)


@dataclass
class CleanReport:
    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    changed: Counter = field(default_factory=Counter)  # rule -> documents (or lines, glosses) changed
    removed: Counter = field(default_factory=Counter)  # rule -> documents removed

    def merge(self, other: CleanReport) -> None:
        self.documents_in += other.documents_in
        self.documents_out += other.documents_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.changed.update(other.changed)
        self.removed.update(other.removed)

    def to_dict(self, cfg: CleanConfig | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "changed": dict(sorted(self.changed.items())),
            "removed": dict(sorted(self.removed.items())),
        }
        if cfg is not None:
            d["config"] = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, as in the file
        return d

    def table(self) -> str:
        """A short console table: one line per rule that fired."""
        n = max(1, self.documents_in)
        rows = [
            ("documents in", self.documents_in, ""),
            ("documents out", self.documents_out, f"{100 * self.documents_out / n:.1f}%"),
        ]
        rows += [(f"changed: {k}", v, "") for k, v in sorted(self.changed.items())]
        rows += [(f"removed: {k}", v, f"{100 * v / n:.1f}%") for k, v in self.removed.most_common()]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"  {name:<{width}}  {count:>10}  {pct:>6}" for name, count, pct in rows)


def normalize(text: str, cfg: CleanConfig, report: CleanReport) -> str:
    """NFC and control characters; counts what it changed."""
    if cfg.nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        report.changed["nfc"] += 1
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if cfg.control_chars:
        text, n = _CONTROL.subn("", text)
        if n:
            report.changed["control_chars"] += n
    return text


def clean_document(text: str, cfg: CleanConfig, report: CleanReport) -> str | None:
    """The cleaned text, or None when the document is removed (the reason goes to report.removed)."""
    report.documents_in += 1
    report.bytes_in += len(text.encode("utf-8", "surrogatepass"))
    text = normalize(text, cfg, report)
    if cfg.boilerplate:
        text, lines, phrases = strip_boilerplate(text)
        if lines:
            report.changed["boilerplate_lines"] += lines
        if phrases:
            report.changed["boilerplate_phrases"] += phrases
    if cfg.pinyin:
        text, n = strip_pinyin(text)
        if n:
            report.changed["pinyin_glosses"] += n
    if " \n" in text or "\t\n" in text or "\u3000\n" in text:
        text = _TRAILING_WS.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text).strip()
    if not text:
        report.removed["empty"] += 1
        return None
    if cfg.quality:
        issue = quality_issue(text, cfg.rules)
        if issue is not None:
            report.removed[issue] += 1
            return None
    report.documents_out += 1
    report.bytes_out += len(text.encode("utf-8", "surrogatepass"))
    return text


def clean_batch(batch: dict[str, list[str]], cfg: CleanConfig) -> tuple[dict[str, list[str]], CleanReport]:
    """Clean one batch of documents (columns text/source/id); returns the kept rows and the counts."""
    report = CleanReport()
    out: dict[str, list[str]] = {"text": [], "source": [], "id": []}
    for text, source, doc_id in zip(batch["text"], batch["source"], batch["id"]):
        cleaned = clean_document(text, cfg, report)
        if cleaned is not None:
            out["text"].append(cleaned)
            out["source"].append(source)
            out["id"].append(doc_id)
    return out, report


def _clean_task(task: tuple[Path, int, CleanConfig]) -> tuple[dict[str, list[str]], CleanReport]:
    path, group, cfg = task
    return clean_batch(read_row_group(path, group), cfg)


def clean_dir(
    in_dir: Path, out_dir: Path, cfg: CleanConfig | None = None, workers: int = 1, quiet: bool = False
) -> dict[str, Any]:
    """Clean every document shard of in_dir into out_dir; writes and returns clean_report.json."""
    cfg = cfg or CleanConfig()
    check_distinct(in_dir, out_dir, "clean")
    tasks = [(p, g, cfg) for p in list_doc_shards(in_dir) for g in range(row_groups(p))]
    writer = DocShardWriter(Path(out_dir))
    report = CleanReport()
    if workers > 1:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for out, r in pool.imap(_clean_task, tasks):  # imap keeps the input order
                writer.add_batch(out["text"], out["source"], out["id"])
                report.merge(r)
    else:
        for t in log.progress(tasks, total=len(tasks), desc="clean"):
            out, r = _clean_task(t)
            writer.add_batch(out["text"], out["source"], out["id"])
            report.merge(r)
    writer.close()
    result = report.to_dict(cfg)
    write_json(Path(out_dir) / "clean_report.json", result)
    if not quiet:
        log.info(f"clean: {in_dir} -> {out_dir}\n{report.table()}")
    return result
