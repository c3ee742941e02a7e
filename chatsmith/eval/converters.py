"""Converters from the public file formats of well-known benchmarks to our task format.

For people who have the files (nothing is downloaded): ARC (AI2's JSONL, or the flat form
with "choices": {"text", "label"}), HellaSwag (rowanz's JSONL), MMLU (Hendrycks' headerless
CSVs, a file or a folder, or JSONL with question/subject/choices/answer), GSM8K (JSONL with
"#### answer"), HumanEval (JSONL, optionally gzipped). Prompts follow lm-evaluation-harness.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.eval.tasks import write_task

LETTERS = "ABCDEFGHIJ"


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ChatsmithError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            yield n, obj


def _field(path: Path, n: int, obj: dict[str, Any], *keys: str) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise ChatsmithError(f"{path}:{n}: missing field '{'.'.join(keys)}'")
        cur = cur[k]
    return cur


def arc(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = []
    for n, obj in _jsonl(path):
        q = _field(path, n, obj, "question")
        if isinstance(q, dict):  # AI2's own files
            stem = _field(path, n, q, "stem")
            texts = [c["text"] for c in _field(path, n, q, "choices")]
            labels = [c["label"] for c in q["choices"]]
        else:  # the flat form
            stem, texts, labels = q, _field(path, n, obj, "choices", "text"), obj["choices"]["label"]
        key = str(_field(path, n, obj, "answerKey"))
        if key not in labels:
            raise ChatsmithError(f"{path}:{n}: answerKey {key!r} is not one of the labels {labels}")
        out.append(
            {
                "id": obj.get("id", str(n)),
                "context": f"Question: {stem}\nAnswer:",
                "choices": texts,
                "gold": labels.index(key),
            }
        )
    return {"name": path.stem, "type": "multiple_choice", "description": "ARC (AI2 Reasoning Challenge)"}, out


def _hs_clean(text: str) -> str:
    # lm-evaluation-harness's HellaSwag preprocessing (WikiHow's bracketed artefacts).
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def hellaswag(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = []
    for n, obj in _jsonl(path):
        ctx = _field(path, n, obj, "ctx_a") + " " + str(obj.get("ctx_b", "")).capitalize()
        label = obj.get("label")
        if label in (None, ""):
            raise ChatsmithError(f"{path}:{n}: no 'label' (HellaSwag's test split has no answers; use val)")
        out.append(
            {
                "id": str(obj.get("ind", n)),
                "context": _hs_clean(f"{obj.get('activity_label', '')}: {ctx}"),
                "choices": [_hs_clean(e) for e in _field(path, n, obj, "endings")],
                "gold": int(label),
            }
        )
    return {"name": path.stem, "type": "multiple_choice", "description": "HellaSwag"}, out


def _mmlu_item(subject: str, question: str, options: list[str], answer: int) -> dict[str, Any]:
    subj = subject.replace("_", " ")
    lines = [
        f"The following are multiple choice questions (with answers) about {subj}.",
        "",
        question.strip(),
    ]
    lines += [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return {
        "subject": subject,
        "context": "\n".join(lines) + "\nAnswer:",
        "choices": list(LETTERS[: len(options)]),
        "gold": answer,
    }


def mmlu(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = []
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    for f in files:
        if f.suffix in (".jsonl", ".gz"):
            for n, obj in _jsonl(f):
                ans = _field(f, n, obj, "answer")
                ans = LETTERS.index(ans) if isinstance(ans, str) and ans in LETTERS else ans
                out.append(
                    _mmlu_item(
                        obj.get("subject", "general"), obj["question"], _field(f, n, obj, "choices"), int(ans)
                    )
                )
            continue
        subject = re.sub(r"_(test|dev|val)$", "", f.stem)
        with open(f, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if len(row) < 4 or row[-1].strip() not in LETTERS[: len(row) - 2]:
                    raise ChatsmithError(
                        f"{f}:{n}: expected question, options..., answer letter; got {row[:1]}..."
                    )
                out.append(_mmlu_item(subject, row[0], row[1:-1], LETTERS.index(row[-1].strip())))
    if not out:
        raise ChatsmithError(f"{path}: no MMLU questions found (.csv files or .jsonl)")
    return {"name": path.stem, "type": "multiple_choice", "description": "MMLU"}, out


def gsm8k(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = []
    for n, obj in _jsonl(path):
        q, a = _field(path, n, obj, "question"), _field(path, n, obj, "answer")
        m = re.search(r"####\s*(-?[\d,.]+)", a)
        if not m:
            raise ChatsmithError(f"{path}:{n}: the answer has no '#### NUMBER' line")
        # The "<<48/2=24>>" calculator annotations are for training tool use, not for prompts.
        target = re.sub(r"<<[^>]*>>", "", a)
        out.append(
            {"prompt": f"Question: {q}\nAnswer:", "answer": m.group(1).replace(",", ""), "target": target}
        )
    head = {
        "name": path.stem,
        "type": "generative",
        "description": "GSM8K",
        "extract": "gsm8k",
        "max_new_tokens": 256,
        "stop": ["\n\nQuestion:", "Question:"],
    }
    return head, out


def humaneval(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = []
    for n, obj in _jsonl(path):
        ex = {k: _field(path, n, obj, k) for k in ("task_id", "prompt", "test", "entry_point")}
        ex["canonical_solution"] = obj.get("canonical_solution", "")
        out.append(ex)
    head = {
        "name": path.stem.replace(".jsonl", ""),
        "type": "code",
        "description": "HumanEval",
        "max_new_tokens": 384,
    }
    return head, out


CONVERTERS: dict[str, Callable[[Path], tuple[dict[str, Any], list[dict[str, Any]]]]] = {
    "arc": arc,
    "hellaswag": hellaswag,
    "mmlu": mmlu,
    "gsm8k": gsm8k,
    "humaneval": humaneval,
}


def convert(fmt: str, src: str | Path, out: str | Path, **header: Any) -> Path:
    """Convert a benchmark file to a task file; header entries override the converter's defaults."""
    if fmt not in CONVERTERS:
        raise ChatsmithError(f"unknown benchmark format '{fmt}'; choose one of {', '.join(CONVERTERS)}")
    src = Path(src).expanduser()
    if not src.exists():
        raise ChatsmithError(f"no file or folder at {src}")
    head, examples = CONVERTERS[fmt](src)
    if not examples:
        raise ChatsmithError(f"{src}: no examples found")
    head.update({k: v for k, v in header.items() if v is not None})
    return write_task(out, head, examples)
