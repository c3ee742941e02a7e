"""The house rules on size (DESIGN.md): no function over 60 lines, no file over 400.

Checked with `ast` over every Python file of the package; the C++ kernels are exempt (one
kernel reads best whole, and they are not Python). The checker itself is tested on made-up
sources so that it cannot pass by accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "chatsmith"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function or method longer than limit lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if n > limit:
                found.append((node.name, node.lineno, n))
    return found


SOURCES = sorted(PKG.rglob("*.py"))


def test_the_package_has_sources() -> None:
    assert len(SOURCES) > 50


def test_no_function_over_60_lines() -> None:
    bad = [
        f"{p.relative_to(PKG.parent)}:{line} {name} ({n} lines)"
        for p in SOURCES
        for name, line, n in long_functions(p.read_text(encoding="utf-8"))
    ]
    assert not bad, "functions over 60 lines (split them where it reads better):\n" + "\n".join(bad)


def test_no_python_file_over_400_lines() -> None:
    bad = [
        f"{p.relative_to(PKG.parent)} ({n} lines)"
        for p in SOURCES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    ]
    assert not bad, "files over 400 lines (one job each; split them):\n" + "\n".join(bad)


@pytest.mark.parametrize(("body", "flagged"), [(60, False), (61, True)])
def test_checker_counts_every_line_of_a_function(body: int, flagged: bool) -> None:
    # def line + (body - 1) statements: `body` lines in all.
    src = "def f():\n" + "    x = 1\n" * (body - 1)
    src += "\n\nclass C:\n    async def g(self):\n" + "        y = 2\n" * (body - 1)
    found = long_functions(src)
    assert ([n for _, _, n in found] == [body, body]) is flagged
    assert (not found) is (not flagged)
