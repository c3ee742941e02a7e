"""Held-out evaluation of the synthetic chat tasks through the engine (greedy)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chatsmith.common.log import progress
from chatsmith.data.synthetic import Example, check, extra_checks
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tokenizer.chat_format import encode_prompt


def final_reply(gen: Generator, prompt_ids: list[int], max_new_tokens: int) -> tuple[str, list[str]]:
    """The text of the last assistant turn (after any tool results), and the tool results."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    reply: list[int] = []
    results: list[str] = []
    for ev in gen.stream(prompt_ids, params):
        if ev.kind == "token":
            reply.append(ev.token)
        elif ev.kind == "tool_result":
            results.append(ev.text)
            reply = []
    text = gen.tok.decode([t for t in reply if t != gen.tok.im_end_id], skip_special=False)
    return text, results


def evaluate_chat(
    gen: Generator, examples: list[Example], max_new_tokens: int, desc: str = "eval"
) -> dict[str, Any]:
    """Accuracy per task, plus a few sample answers for the report."""
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ex in progress(examples, total=len(examples), desc=desc):
        reply, tools = final_reply(gen, encode_prompt(gen.tok, ex.prompt), max_new_tokens)
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
