"""Code tasks in HumanEval's format, scored by pass@k with the samples run in the sandbox.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
Trained on Code"): with n samples of which c pass, 1 - C(n-c, k) / C(n, k).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from chatsmith.common.log import progress
from chatsmith.eval.code_sandbox import run_programs
from chatsmith.eval.generation import generate_texts
from chatsmith.eval.prompts import generation_prompt_ids
from chatsmith.eval.tasks import Task
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer

# Where a function body ends in HumanEval-style completions (the paper's stop sequences).
STOP = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint("]


def pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def program(ex: dict[str, Any], completion: str) -> str:
    """What runs: the prompt, the model's completion, the tests, and the call of check()."""
    return f"{ex['prompt']}{completion}\n\n{ex['test']}\n\ncheck({ex['entry_point']})\n"


def evaluate_code(
    model: GPT,
    tok: BPETokenizer,
    task: Task,
    indices: list[int],
    seed: int,
    dtype: torch.dtype,
    workers: int = 2,
) -> list[dict[str, Any]]:
    cfg = task.config
    n = cfg["n_samples"]
    records = []
    for i in progress(indices, total=len(indices), desc=f"{task.name} samples"):
        ex = task.examples[i]
        prompt = generation_prompt_ids(tok, task, i, seed)
        outs = generate_texts(
            model,
            tok,
            [prompt] * n,
            cfg["max_new_tokens"],
            False,
            dtype,
            [seed * 1_000_003 + i * 1009 + j for j in range(n)],
            cfg["temperature"],
            list(cfg["stop"]) or STOP,
        )
        results = run_programs(
            [program(ex, o["text"]) for o in outs], cfg["timeout_s"], cfg["memory_mb"], workers
        )
        records.append(
            {
                "index": i,
                "line": ex["_line"],
                "task_id": ex["task_id"],
                "n": n,
                "passed": sum(r.passed for r in results),
                "statuses": [r.status for r in results],
                "question": ex["task_id"],
                "reply": outs[0]["text"],
                "correct": results[0].passed,
            }
        )
    return records


def summarize_code(records: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(records)}
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(r["n"], r["passed"], k) for r in records) / len(records)
    out["accuracy"] = out[f"pass@{min(ks)}"]
    return out
