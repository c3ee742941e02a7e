"""Generative tasks (GSM8K style) and chat tasks: generate, extract the answer, compare.

Extraction (the task header's `extract`) and comparison live in tasks/answers.py, where RL
rewards by the same judgement.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from chatsmith.eval.generation import generate_texts
from chatsmith.eval.prompts import generation_prompt_ids
from chatsmith.eval.tasks import Task
from chatsmith.model.gpt import GPT
from chatsmith.tasks.answers import chat_check, extract_answer, is_match
from chatsmith.tasks.common import Example
from chatsmith.tasks.mixture import check, extra_checks
from chatsmith.tokenizer.bpe import BPETokenizer


def _generate(
    model: GPT, tok: BPETokenizer, task: Task, indices: list[int], seed: int, dtype: torch.dtype
) -> list[dict[str, Any]]:
    cfg = task.config
    prompts = [generation_prompt_ids(tok, task, i, seed) for i in indices]
    stop = list(cfg["stop"]) or (["\n\n"] if cfg["format"] == "text" and task.type == "generative" else [])
    return generate_texts(
        model,
        tok,
        prompts,
        cfg["max_new_tokens"],
        cfg["tools"] or task.type == "chat",
        dtype,
        [seed * 1_000_003 + i for i in indices],
        cfg["temperature"],
        stop,
    )


def evaluate_generative(
    model: GPT, tok: BPETokenizer, task: Task, indices: list[int], seed: int, dtype: torch.dtype
) -> list[dict[str, Any]]:
    outs = _generate(model, tok, task, indices, seed, dtype)
    records = []
    for i, out in zip(indices, outs):
        ex = task.examples[i]
        pred = extract_answer(out["text"], task.config["extract"])
        records.append(
            {
                "index": i,
                "line": ex["_line"],
                "question": ex["prompt"][-300:],
                "reply": out["text"],
                "tools": out["tool_results"],
                "pred": pred,
                "gold": ex["answer"],
                "correct": is_match(pred, ex["answer"]),
            }
        )
    return records


def _chat_verdicts(ex: dict[str, Any], reply: str) -> dict[str, bool]:
    """The example's own check, plus the synthetic tasks' stricter secondary checks."""
    how = ex.get("check", "contains")
    if how == "synthetic":
        synth = Example(ex.get("subtask", ""), [], ex["messages"], ex["answer"], ex.get("meta", {}))
        return {"correct": check(synth, reply), **extra_checks(synth, reply)}
    return {"correct": chat_check(how, ex["answer"], reply)}


def evaluate_chat_task(
    model: GPT, tok: BPETokenizer, task: Task, indices: list[int], seed: int, dtype: torch.dtype
) -> list[dict[str, Any]]:
    """Conversations through the chat format; the built-in tools run inside generation."""
    outs = _generate(model, tok, task, indices, seed, dtype)
    records = []
    for i, out in zip(indices, outs):
        ex = task.examples[i]
        records.append(
            {
                "index": i,
                "line": ex["_line"],
                "subtask": ex.get("subtask", ""),
                "question": str(ex["messages"][-1].get("content", ""))[-300:],
                "reply": out["text"],
                "tools": out["tool_results"],
                "gold": ex["answer"],
                **_chat_verdicts(ex, out["text"]),
            }
        )
    return records


def summarize_generative(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact-match accuracy, per subtask too (with any secondary checks) when examples name one."""
    out: dict[str, Any] = {"n": len(records), "accuracy": sum(r["correct"] for r in records) / len(records)}
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for r in records:
        if not r.get("subtask"):
            continue
        for key, val in r.items():
            if isinstance(val, bool):  # "correct" counts for the subtask, other checks by their name
                name = r["subtask"] if key == "correct" else key
                right[name] += val
                total[name] += 1
    for name in sorted(total):
        out[f"accuracy/{name}"] = right[name] / total[name]
        out[f"n/{name}"] = total[name]
    return out


def samples(records: list[dict[str, Any]], per_group: int = 2) -> list[dict[str, Any]]:
    """A few answers for the report: the first of each subtask (or of the task)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in records:
        g = r.get("subtask", "")
        if seen[g] < per_group:
            seen[g] += 1
            out.append(
                {k: r[k] for k in ("subtask", "question", "reply", "tools", "gold", "correct") if k in r}
            )
    return out
