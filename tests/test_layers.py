"""Imports go downward only (DESIGN.md, "Package layout and the direction of imports").

Static analysis with `ast`: no chatsmith module is imported. Every `import` and `from ... import`
of a chatsmith module anywhere in a file (inside functions, `if TYPE_CHECKING:` blocks and
`importlib.import_module("...")` calls included) must go to a lower layer, or stay inside the
importer's own unit (a package such as chatsmith/data, or a single module such as
chatsmith/checkpoint.py). Units on one layer do not import each other. Inside a unit, the
modules' imports (at any depth) form no cycle.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "chatsmith"

# Top-level module or package under chatsmith/ -> layer. Each entry is one unit.
LAYERS: dict[str, int] = {
    "common": 0,
    "tokenizer": 1,
    "model": 1,
    "kernels": 1,  # optional fast paths, swapped into a built model from outside
    "data": 2,
    "tasks": 2,  # one module per task: generator, check, reward (DESIGN.md)
    "checkpoint": 2,
    "engine": 3,
    "eval": 4,
    "train": 5,
    "serve": 5,
    "interop": 5,
    "cli": 6,
    "bench": 6,  # speed measurements (chatsmith bench generate ...)
    "__main__": 6,
    "chat_cli": 6,  # the terminal chat front end
}
# The package's own __init__.py is L0 and imports nothing of chatsmith but itself; every module
# may import it (Python does so anyway on the way to any chatsmith.x).
ROOT_UNIT = ""

# Same-layer imports that DESIGN.md sanctions: `python -m chatsmith` calls the `chatsmith`
# command, whose `chat` verb runs the terminal front end.
# The command line dispatches to its front ends (chat, bench), which sit on its layer.
# Tasks make their examples in data's formats (preference pairs) and the demo's data set from
# data's corpus and shards; data knows nothing of tasks.
# The kernels convert the model's modules (as torchtitan's converters do): they import the model,
# and the model never imports them (KERNELS below).
SAME_LAYER_ALLOWED: set[tuple[str, str]] = {
    ("__main__", "cli"),
    ("cli", "chat_cli"),
    ("cli", "bench"),
    ("tasks", "data"),
    ("kernels", "model"),
}

GPT = "chatsmith.model.gpt"
# model/gpt.py is the network only: no distributed, training, data or serving code (DESIGN.md).
GPT_FORBIDDEN = (
    "torch.distributed",
    "torch.multiprocessing",
    "torch.optim",
    "torch.utils.data",
    "datasets",
    "pyarrow",
    "pandas",
    "requests",
    "httpx",
    "aiohttp",
    "urllib.request",
    "fastapi",
    "starlette",
    "uvicorn",
    "flask",
    "safetensors",
    "tokenizers",
)

KERNELS = "chatsmith.kernels"  # no module of chatsmith/model/ may import it (DESIGN.md)

ASSIGN_HINT = "assign it a layer in LAYERS in tests/test_layers.py (see DESIGN.md)"


def module_name(path: Path) -> str:
    """chatsmith/data/tokens/loaders.py -> chatsmith.data.tokens.loaders;
    chatsmith/data/__init__.py -> chatsmith.data."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_exists(name: str) -> bool:
    """Whether a dotted chatsmith name is a module or package in this tree."""
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def unit_of(name: str) -> str | None:
    """The unit a chatsmith module belongs to: its first name below `chatsmith`, or ROOT_UNIT."""
    parts = name.split(".")
    assert parts[0] == "chatsmith", name
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def imported_modules(
    tree: ast.AST, module: str, is_package: bool, exists: Callable[[str], bool] = module_exists
) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every module the source imports, at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    yield node.lineno, "<relative import beyond the top-level package>"
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                # `from chatsmith import serve` imports the module chatsmith.serve.
                sub = f"{base}.{alias.name}"
                if alias.name != "*" and base.split(".")[0] == "chatsmith" and exists(sub):
                    yield node.lineno, sub
                elif alias.name != "*" and base.split(".")[0] != "chatsmith":
                    yield node.lineno, sub  # e.g. `from torch import distributed`
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield node.lineno, node.args[0].value


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def check_source(
    source: str,
    module: str,
    is_package: bool = False,
    exists: Callable[[str], bool] = module_exists,
) -> list[str]:
    """The layering violations in one module's source; an empty list when it obeys DESIGN.md."""
    where = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    src_unit = unit_of(module)
    if src_unit != ROOT_UNIT and src_unit not in LAYERS:
        return [f"{where}: chatsmith.{src_unit} has no layer; {ASSIGN_HINT}"]
    src_layer = 0 if src_unit == ROOT_UNIT else LAYERS[src_unit]
    problems: list[str] = []
    for line, target in imported_modules(ast.parse(source), module, is_package, exists):
        here = f"{where}:{line}: imports {target}"
        if target.startswith("<"):
            problems.append(here)
            continue
        if module == GPT:
            for bad in GPT_FORBIDDEN:
                if _is_under(target, bad):
                    problems.append(f"{here}, but model/gpt.py must not use {bad} (network only)")
            if _is_under(target, "chatsmith") and not _is_under(target, "chatsmith.model"):
                problems.append(f"{here}, but model/gpt.py may only import chatsmith.model.*")
        if src_unit == "model" and _is_under(target, KERNELS):
            problems.append(f"{here}, but the model never imports the kernels (swapped in from outside)")
        if not _is_under(target, "chatsmith"):
            continue
        dst_unit = unit_of(target)
        if dst_unit in (src_unit, ROOT_UNIT):
            continue
        if dst_unit not in LAYERS:
            problems.append(f"{here}, which has no layer; {ASSIGN_HINT}")
            continue
        dst_layer = LAYERS[dst_unit]
        if src_unit == ROOT_UNIT:
            problems.append(f"{here}, but chatsmith/__init__.py may import nothing of chatsmith")
        elif dst_layer > src_layer:
            problems.append(f"{here}: L{src_layer} chatsmith.{src_unit} imports upward (L{dst_layer})")
        elif dst_layer == src_layer and (src_unit, dst_unit) not in SAME_LAYER_ALLOWED:
            problems.append(
                f"{here}: chatsmith.{src_unit} and chatsmith.{dst_unit} are both L{src_layer}; "
                "units on one layer do not import each other"
            )
    return problems


def check_file(path: Path) -> list[str]:
    return check_source(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


SOURCES = sorted(PKG.rglob("*.py"))


def test_the_tree_has_sources() -> None:
    assert PKG / "__init__.py" in SOURCES and PKG / "model" / "gpt.py" in SOURCES


def test_every_top_level_module_has_a_layer() -> None:
    top = {p.stem for p in PKG.glob("*.py") if p.name != "__init__.py"}
    top |= {p.name for p in PKG.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    missing = sorted(top - set(LAYERS))
    assert not missing, f"chatsmith/{', chatsmith/'.join(missing)} has no layer; {ASSIGN_HINT}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downward(path: Path) -> None:
    problems = check_file(path)
    assert not problems, "\n".join(problems)


# --- the checker itself --------------------------------------------------------------------


def _flags(source: str, module: str, is_package: bool = False) -> list[str]:
    return check_source(source, module, is_package)


@pytest.mark.parametrize(
    ("module", "source", "needle"),
    [
        ("chatsmith.model.gpt", "from chatsmith.train.loop import train\n", "upward"),
        ("chatsmith.common.config", "import chatsmith.tokenizer.bpe\n", "upward"),
        ("chatsmith.data.loaders", "def f():\n    from chatsmith.engine import generate\n", "upward"),
        ("chatsmith.checkpoint", "from chatsmith import train\n", "upward"),
        ("chatsmith.engine.generate", "from ..serve import app\n", "upward"),
        ("chatsmith.engine.generate", "from .. import eval\n", "upward"),
        ("chatsmith.eval.report", "import importlib\nimportlib.import_module('chatsmith.cli')\n", "upward"),
        ("chatsmith.tokenizer.bpe", "from chatsmith.model.gpt import GPT\n", "both L1"),
        ("chatsmith.model.build", "from chatsmith.tokenizer import bpe\n", "both L1"),
        ("chatsmith.data.demo", "from chatsmith.checkpoint import load_checkpoint\n", "both L2"),
        ("chatsmith.train.loop", "from chatsmith.serve.app import app\n", "both L5"),
        ("chatsmith.chat_cli", "from chatsmith.cli import main\n", "both L6"),
        ("chatsmith", "from chatsmith.common.config import Config\n", "may import nothing"),
        ("chatsmith.data.loaders", "from chatsmith.nosuch import x\n", "no layer"),
        ("chatsmith.nosuch", "import os\n", "no layer"),
        ("chatsmith.model.gpt", "import torch.distributed as dist\n", "torch.distributed"),
        ("chatsmith.model.gpt", "from torch import distributed\n", "torch.distributed"),
        ("chatsmith.model.gpt", "from torch.distributed.fsdp import X\n", "torch.distributed"),
        ("chatsmith.model.gpt", "from torch.utils.data import DataLoader\n", "torch.utils.data"),
        ("chatsmith.model.gpt", "import fastapi\n", "fastapi"),
        ("chatsmith.model.gpt", "from chatsmith.common.config import ModelConfig\n", "chatsmith.model.*"),
        ("chatsmith.model.gpt", "from ..common import device\n", "chatsmith.model.*"),
        ("chatsmith.model.gpt", "from chatsmith.kernels.cpu import ops\n", "never imports the kernels"),
        ("chatsmith.model.gpt", "import chatsmith.kernels\n", "never imports the kernels"),
        ("chatsmith.model.gpt", "from ..kernels import prepare\n", "never imports the kernels"),
        ("chatsmith.model.kv_cache", "from chatsmith.kernels.cpu import ops\n", "never imports the kernels"),
        ("chatsmith.model", "def f():\n    from chatsmith import kernels\n", "never imports the kernels"),
    ],
)
def test_checker_flags_violations(module: str, source: str, needle: str) -> None:
    problems = _flags(source, module, is_package=module == "chatsmith")
    assert problems and any(needle in p for p in problems), problems


def test_checker_flags_relative_import_in_a_package_init() -> None:
    # In chatsmith/model/__init__.py, `..train` is chatsmith.train.
    assert _flags("from ..train import loop\n", "chatsmith.model", is_package=True)
    assert not _flags("from .gpt import GPT\n", "chatsmith.model", is_package=True)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("chatsmith.data.loaders", "from chatsmith.data.shards import open_shard\n"),
        ("chatsmith.data.loaders", "from . import shards\nfrom .shards import open_shard\n"),
        ("chatsmith.data.loaders", "from chatsmith.tokenizer.bpe import BPETokenizer\n"),
        ("chatsmith.model.build", "from chatsmith.common.config import ModelConfig\n"),
        ("chatsmith.train.loop", "from chatsmith.checkpoint import save_checkpoint\n"),
        ("chatsmith.train.speedrun", "from chatsmith.eval.report import write_report\n"),
        ("chatsmith.common.log", "from chatsmith import __version__\nimport chatsmith\n"),
        ("chatsmith.cli", "def f():\n    from chatsmith.train.speedrun import speedrun\n"),
        ("chatsmith.cli", "from chatsmith.chat_cli import chat_main\n"),
        ("chatsmith.__main__", "from chatsmith.cli import main\n"),
        ("chatsmith.model.gpt", "import torch\nimport torch.nn.functional as F\n"),
        ("chatsmith.model.gpt", "from .rope import apply_rope\nfrom . import kv_cache\n"),
        ("chatsmith.model.gpt", "from chatsmith.model.kv_cache import SlotKVCache\n"),
        ("chatsmith.kernels.cpu.modules", "from chatsmith.model.gpt import Attention\n"),
        ("chatsmith.engine.runner", "from chatsmith import kernels\n"),
        ("chatsmith.train.loop", "from chatsmith.kernels import prepare\n"),
        ("chatsmith.serve.app", "from fastapi import FastAPI\n"),
    ],
)
def test_checker_allows_legal_imports(module: str, source: str) -> None:
    assert _flags(source, module) == []


# --- no import cycle inside a unit ---------------------------------------------------------


def unit_imports(
    tree: ast.AST, module: str, is_package: bool, exists: Callable[[str], bool] = module_exists
) -> set[str]:
    """The modules of the importer's own unit that its imports load, at any depth.

    `from pkg import sub` needs pkg.sub, not what pkg/__init__.py defines: Python imports the
    parent packages of every module first anyway, so that edge would make every package whose
    __init__ imports a submodule look like a cycle.
    """
    unit = unit_of(module)
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
            continue
        names = [t for _, t in imported_modules(node, module, is_package, exists)]
        if isinstance(node, ast.ImportFrom) and len(names) == len(node.names) + 1:
            names = names[1:]  # every imported name is a submodule
        found |= {t for t in names if _is_under(t, "chatsmith") and exists(t) and unit_of(t) == unit}
    return found if unit != ROOT_UNIT else set()


def import_cycle(
    sources: dict[str, tuple[str, bool]], exists: Callable[[str], bool] = module_exists
) -> list[str]:
    """One import cycle among the modules (name -> (source, is_package)), or [] if there is none."""
    graph = {m: unit_imports(ast.parse(src), m, pkg, exists) for m, (src, pkg) in sources.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return list(e.args[1])
    return []


UNITS = sorted({unit_of(module_name(p)) for p in SOURCES} - {ROOT_UNIT})


@pytest.mark.parametrize("unit", UNITS)
def test_no_import_cycle_inside_a_unit(unit: str) -> None:
    sources = {
        module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in SOURCES
        if unit_of(module_name(p)) == unit
    }
    cycle = import_cycle(sources)
    assert not cycle, f"chatsmith.{unit} has an import cycle: {' -> '.join(cycle)}"


def _made_up(modules: dict[str, str]) -> list[str]:
    packages = {m.rpartition(".")[0] for m in modules} - {"chatsmith"}
    known = set(modules) | packages
    sources = {m: (src, m in packages) for m, src in modules.items()}
    sources |= {p: ("", True) for p in packages if p not in modules}
    return import_cycle(sources, exists=lambda name: name in known)


@pytest.mark.parametrize(
    "modules",
    [
        {  # the shape data/synthetic.py and data/word_problems.py once had
            "chatsmith.data.synthetic": "def gens():\n    from chatsmith.data.word_problems import wp\n",
            "chatsmith.data.word_problems": "from chatsmith.data.synthetic import NAMES\n",
        },
        {
            "chatsmith.tasks.a": "from .b import f\n",
            "chatsmith.tasks.b": "from . import c\n",
            "chatsmith.tasks.c": "import importlib\nimportlib.import_module('chatsmith.tasks.a')\n",
        },
        {
            "chatsmith.data.corpus.x": "from chatsmith.data.tokens import y\n",
            "chatsmith.data.tokens.y": "from ..corpus.x import f\n",
        },
    ],
)
def test_checker_finds_an_import_cycle(modules: dict[str, str]) -> None:
    cycle = _made_up(modules)
    assert cycle and set(cycle) <= set(modules), cycle


def test_checker_allows_imports_without_a_cycle() -> None:
    # A package's __init__ re-exporting a module that imports a sibling through the package.
    assert not _made_up(
        {
            "chatsmith.model": "from chatsmith.model.gpt import GPT\n",
            "chatsmith.model.gpt": "from chatsmith.model import rope\n",
            "chatsmith.model.rope": "import torch\n",
        }
    )
    # Imports that leave the unit never close a cycle inside it.
    assert not _made_up(
        {
            "chatsmith.tasks.a": "from chatsmith.data.b import f\n",
            "chatsmith.data.b": "from chatsmith.tasks.a import g\n",
        }
    )
