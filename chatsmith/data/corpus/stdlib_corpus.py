"""The demo's pretraining text: docstrings and comments of the installed Python stdlib.

Real English prose and code that every machine with Python has, so the demo needs no
network. Files are visited in a seeded shuffle (deterministic for a given Python), and
each docstring, and each file's comment block, is one document.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from chatsmith.common.errors import ChatsmithError

_COMMENT = re.compile(r"^[ \t]*#(?!!)[ \t]?(.*)$", re.MULTILINE)
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_files(seed: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not (_SKIP_DIRS & set(p.relative_to(root).parts)))
    if not files:
        raise ChatsmithError(f"no Python sources found under {root} to build the demo corpus")
    random.Random(seed).shuffle(files)
    return files


def file_documents(path: Path) -> Iterator[str]:
    """Docstrings of the module, classes and functions, then the comments as one text."""
    try:
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:
                yield doc.strip()
    lines = [m.group(1).rstrip() for m in _COMMENT.finditer(src)]
    comments = "\n".join(line for line in lines if line and not set(line) <= set("-=#*~ "))
    if len(comments) >= 80:
        yield comments


def stdlib_documents(max_bytes: int, seed: int) -> list[str]:
    """Documents until `max_bytes` of UTF-8 text is collected."""
    docs, total = [], 0
    for path in stdlib_files(seed):
        for doc in file_documents(path):
            docs.append(doc)
            total += len(doc.encode())
            if total >= max_bytes:
                return docs
    return docs
