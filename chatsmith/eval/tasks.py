"""The evaluation task format: one JSONL file per task, validated line by line.

A file may open with a header line `{"task": {...}}` (name, type, few-shot count,
answer extraction, ...); every other line is one example. The type follows from the
header, or else from the fields of the first example. docs/tasks.md is the reference.

Every mistake in a file is a ChatsmithError that names the file and the line, so a
hand-made task file with a typo fails at load time instead of scoring silently wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatsmith.common.errors import ChatsmithError

TYPES = ("multiple_choice", "generative", "code", "chat")
EXTRACTORS = ("last_number", "gsm8k", "first_line", "strip")

# Header keys, their types and defaults. Unknown keys are refused (a typo would otherwise
# silently fall back to a default).
HEADER: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None),
    "type": (str, None),
    "description": (str, ""),
    "num_fewshot": (int, 0),
    "fewshot_delimiter": (str, "\n\n"),
    "target_delimiter": (str, " "),
    "format": (str, "text"),  # text | chat: how prompts reach the model
    "extract": (str, "last_number"),
    "tools": (bool, False),  # run the built-in tools (calculator, ...) inside generation
    "max_new_tokens": (int, 64),
    "stop": (list, []),
    "n_samples": (int, 1),
    "k": (list, [1]),
    "temperature": (float, 0.0),
    "timeout_s": (float, 5.0),
    "memory_mb": (int, 1024),
}


@dataclass
class Task:
    name: str
    type: str
    path: str
    examples: list[dict[str, Any]]  # evaluated, in file order; each has "_line"
    fewshot_pool: list[dict[str, Any]] = field(default_factory=list)  # lines with "split": "fewshot"
    config: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # sha256 of the file's bytes: part of the cache key

    def __getattr__(self, key: str) -> Any:
        # Header settings read as attributes (task.num_fewshot); only called for missing names.
        cfg = self.__dict__.get("config", {})
        if key in cfg:
            return cfg[key]
        raise AttributeError(key)


def _err(path: Path | str, line: int, msg: str) -> ChatsmithError:
    return ChatsmithError(f"{path}:{line}: {msg}")


def _infer_type(ex: dict[str, Any]) -> str | None:
    if "choices" in ex:
        return "multiple_choice"
    if "test" in ex and "entry_point" in ex:
        return "code"
    if "messages" in ex:
        return "chat"
    if "prompt" in ex and "answer" in ex:
        return "generative"
    return None


def _check_header(path: Path, line: int, head: Any) -> dict[str, Any]:
    if not isinstance(head, dict):
        raise _err(path, line, '"task" must be an object of settings')
    cfg = {k: d for k, (_, d) in HEADER.items()}
    for k, v in head.items():
        if k not in HEADER:
            raise _err(path, line, f"unknown task setting '{k}'; allowed: {', '.join(HEADER)}")
        want = HEADER[k][0]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise _err(path, line, f"task setting '{k}' must be {getattr(want, '__name__', want)}, got {v!r}")
        cfg[k] = v
    if cfg["type"] is not None and cfg["type"] not in TYPES:
        raise _err(path, line, f"task type '{cfg['type']}' is not one of {', '.join(TYPES)}")
    if cfg["format"] not in ("text", "chat"):
        raise _err(path, line, f"format must be 'text' or 'chat', got {cfg['format']!r}")
    if cfg["extract"] not in EXTRACTORS and not cfg["extract"].startswith("regex:"):
        raise _err(path, line, f"extract must be one of {', '.join(EXTRACTORS)} or 'regex:PATTERN'")
    if cfg["num_fewshot"] < 0 or cfg["max_new_tokens"] < 1 or cfg["n_samples"] < 1:
        raise _err(path, line, "num_fewshot must be >= 0, max_new_tokens and n_samples >= 1")
    if not all(isinstance(k, int) and 1 <= k <= cfg["n_samples"] for k in cfg["k"]):
        raise _err(path, line, f"every k must be an integer in 1..n_samples ({cfg['n_samples']})")
    if not all(isinstance(s, str) and s for s in cfg["stop"]):
        raise _err(path, line, "stop must be a list of non-empty strings")
    return cfg


def _need(path: Path, line: int, ex: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in ex:
        raise _err(path, line, f"missing field '{key}'")
    if not isinstance(ex[key], kind) or isinstance(ex[key], bool):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _err(path, line, f"field '{key}' must be {name}, got {type(ex[key]).__name__}")
    return ex[key]


def validate_example(path: Path, line: int, kind: str, ex: dict[str, Any]) -> dict[str, Any]:
    """Check one example's fields for its task type; returns it normalised (gold as an index)."""
    ex = dict(ex)
    if kind == "multiple_choice":
        _need(path, line, ex, "context", str)
        choices = _need(path, line, ex, "choices", list)
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise _err(path, line, "'choices' must be a list of at least 2 non-empty strings")
        gold = _need(path, line, ex, "gold", (int, str))
        if isinstance(gold, str):
            if gold not in choices:
                raise _err(path, line, f"gold answer {gold!r} is not one of the choices {choices!r}")
            gold = choices.index(gold)
        if not 0 <= gold < len(choices):
            raise _err(path, line, f"gold index {gold} is outside the {len(choices)} choices (0-based)")
        ex["gold"] = gold
    elif kind == "generative":
        _need(path, line, ex, "prompt", str)
        ex["answer"] = str(_need(path, line, ex, "answer", (str, int, float)))
        if "target" in ex:
            _need(path, line, ex, "target", str)
    elif kind == "chat":
        msgs = _need(path, line, ex, "messages", list)
        if not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise _err(path, line, "'messages' must be a non-empty list of {role, content} objects")
        ex["answer"] = str(_need(path, line, ex, "answer", (str, int, float)))
        if ex.get("check", "contains") not in ("contains", "exact", "last_number", "synthetic"):
            raise _err(path, line, "'check' must be contains, exact, last_number or synthetic")
    elif kind == "code":
        for key in ("task_id", "prompt", "test", "entry_point"):
            _need(path, line, ex, key, str)
    return ex


def load_task(path: str | Path) -> Task:
    """Read and validate a task file; every error names the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ChatsmithError(f"no task file at {path}")
    raw = path.read_bytes()
    cfg: dict[str, Any] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    for n, text in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise _err(path, n, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise _err(path, n, "each line must be a JSON object")
        if "task" in obj and len(obj) == 1:
            if cfg is not None or rows:
                raise _err(path, n, 'the {"task": ...} header must be the first line')
            cfg = _check_header(path, n, obj["task"])
            head_line = n
            continue
        rows.append((n, obj))
    if cfg is None:
        cfg, head_line = _check_header(path, 1, {}), 1
    if not rows:
        raise ChatsmithError(f"{path}: the task has no examples")
    kind = cfg["type"] or _infer_type(rows[0][1])
    if kind is None:
        raise _err(
            path,
            rows[0][0],
            "cannot tell the task type from this example; add a header line "
            '{"task": {"type": "multiple_choice|generative|code|chat"}}',
        )
    examples, pool = [], []
    for n, obj in rows:
        ex = validate_example(path, n, kind, obj)
        ex["_line"] = n
        (pool if obj.get("split") == "fewshot" else examples).append(ex)
    if not examples:
        raise ChatsmithError(f"{path}: every example is marked as a few-shot example")
    if cfg["num_fewshot"] and not pool and len(examples) <= cfg["num_fewshot"]:
        raise _err(path, head_line, f"num_fewshot {cfg['num_fewshot']} needs more than that many examples")
    cfg["type"] = kind
    cfg["name"] = cfg["name"] or path.stem
    digest = hashlib.sha256(raw).hexdigest()
    return Task(cfg["name"], kind, str(path), examples, pool, cfg, digest)


def write_task(path: str | Path, header: dict[str, Any], examples: list[dict[str, Any]]) -> Path:
    """Write a task file (header line, then one example per line); used by converters and the demo."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"task": header}, ensure_ascii=False)]
    lines += [json.dumps(ex, ensure_ascii=False) for ex in examples]
    path.write_text("\n".join(lines) + "\n")
    return path
