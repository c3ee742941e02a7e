"""A user's own corpus: .txt (one document per file, or per blank-line block) and .jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from chatsmith.common.errors import ChatsmithError

SUFFIXES = (".txt", ".md", ".jsonl")


def corpus_files(path: str | Path) -> list[Path]:
    p = Path(path).expanduser()
    if not p.exists():
        raise ChatsmithError(f"corpus path {p} does not exist")
    files = sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file()) if p.is_dir() else [p]
    if not files:
        raise ChatsmithError(f"corpus folder {p} holds no {', '.join(SUFFIXES)} files")
    return files


def read_documents(path: str | Path, field: str = "text") -> list[str]:
    """Documents of every file under path; an empty corpus is an error, not a silent no-op."""
    docs: list[str] = []
    for f in corpus_files(path):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ChatsmithError(f"{f}: not valid UTF-8 (byte {e.start})") from None
        except OSError as e:
            raise ChatsmithError(f"{f}: cannot read ({e.strerror})") from None
        if f.suffix == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ChatsmithError(f"{f}:{n}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                    raise ChatsmithError(f"{f}:{n}: no string field '{field}'")
                docs.append(obj[field])
        else:
            docs += [b.strip() for b in text.split("\n\n\n") if b.strip()]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ChatsmithError(f"corpus {path} is empty: no text found")
    return docs
