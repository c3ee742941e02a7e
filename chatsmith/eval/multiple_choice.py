"""Multiple-choice tasks (ARC, HellaSwag, MMLU style) by the log-likelihood of each choice.

accuracy: the choice with the highest total log-probability is the gold one.
accuracy_norm: the same with log-probability per byte of the choice (lm-evaluation-harness's
acc_norm), which stops long choices from losing just for being long.
centered: CORE's centred accuracy (DCLM, Li et al. 2024; nanochat's report), where chance
scores 0 and a perfect model 1: (acc - chance) / (1 - chance), chance = mean of 1/#choices.
"""

from __future__ import annotations

from typing import Any

import torch

from chatsmith.eval.loglik import score_requests
from chatsmith.eval.prompts import mc_context_ids, mc_continuation_ids
from chatsmith.eval.tasks import Task
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer


def evaluate_mc(
    model: GPT,
    tok: BPETokenizer,
    task: Task,
    indices: list[int],
    seed: int,
    dtype: torch.dtype = torch.float32,
    batch_tokens: int = 8192,
) -> list[dict[str, Any]]:
    """One record per example index: the log-likelihood of every choice and the verdicts."""
    requests, owners = [], []
    for i in indices:
        ctx = mc_context_ids(tok, task, i, seed)
        for c in task.examples[i]["choices"]:
            requests.append((ctx, mc_continuation_ids(tok, task, c)))
            owners.append(i)
    scores = score_requests(model, requests, dtype, batch_tokens)
    per: dict[int, list[float]] = {i: [] for i in indices}
    for i, (ll, _) in zip(owners, scores):
        per[i].append(ll)
    records = []
    for i in indices:
        ex = task.examples[i]
        lls = per[i]
        nbytes = [max(1, len(c.encode())) for c in ex["choices"]]
        pred = max(range(len(lls)), key=lambda j: lls[j])
        pred_norm = max(range(len(lls)), key=lambda j: lls[j] / nbytes[j])
        records.append(
            {
                "index": i,
                "line": ex["_line"],
                "loglik": lls,
                "pred": pred,
                "gold": ex["gold"],
                "correct": pred == ex["gold"],
                "correct_norm": pred_norm == ex["gold"],
                "n_choices": len(lls),
            }
        )
    return records


def summarize_mc(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    acc = sum(r["correct"] for r in records) / n
    acc_norm = sum(r["correct_norm"] for r in records) / n
    chance = sum(1 / r["n_choices"] for r in records) / n
    return {
        "n": n,
        "accuracy": acc,
        "accuracy_norm": acc_norm,
        "centered": (acc - chance) / (1 - chance),
        "chance": chance,
    }
