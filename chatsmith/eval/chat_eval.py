"""Held-out evaluation of the synthetic chat tasks through the engine (greedy, batched)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chatsmith.common.log import progress
from chatsmith.data.synthetic import Example, check, extra_checks
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tokenizer.chat_format import encode_prompt

BATCH = 32  # prompts handed to the scheduler at once (it runs them as one batch)


def final_replies(
    gen: Generator, prompts: list[list[int]], max_new_tokens: int
) -> list[tuple[str, list[str]]]:
    """For each prompt: the last assistant turn's text (after any tool results), and the tool results."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    return [(c[0].final_text, c[0].tool_results) for c in gen.generate(prompts, params)]


def evaluate_chat(
    gen: Generator, examples: list[Example], max_new_tokens: int, desc: str = "eval"
) -> dict[str, Any]:
    """Accuracy per task, plus a few sample answers for the report."""
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    batches = [examples[i : i + BATCH] for i in range(0, len(examples), BATCH)]
    for batch in progress(batches, total=len(batches), desc=desc):
        replies = final_replies(gen, [encode_prompt(gen.tok, ex.prompt) for ex in batch], max_new_tokens)
        for ex, (reply, tools) in zip(batch, replies):
            ok = check(ex, reply)
            right[ex.task] += ok
            total[ex.task] += 1
            for name, passed in extra_checks(ex, reply).items():
                right[name] += passed
                total[name] += 1
            if len(samples[ex.task]) < 3:
                samples[ex.task].append(
                    {"question": ex.prompt[-1]["content"], "reply": reply, "tools": tools, "ok": ok}
                )
    acc = {t: right[t] / total[t] for t in sorted(total)}
    return {"accuracy": acc, "counts": dict(total), "samples": dict(samples)}
