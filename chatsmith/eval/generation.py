"""Every call from evaluation into the engine goes through this module.

`generate_texts` answers a list of prompts and returns, for each, the text a user would
read: the assistant's text after the last built-in tool result, cut at the first stop
string, and the tool results. The prompts run together through the engine's scheduler
(continuous batching), stepped in this thread rather than on the engine's background
thread: with no thread timing involved, the same prompts always form the same batches,
so a rerun, or a run split between processes by blocks of prompts, gives the same text.
Each prompt has its own seed, so sampling does not depend on its neighbours either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from chatsmith.common.log import progress
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.engine.sequence import Request
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer


def _cut(text: str, stop: Sequence[str]) -> str:
    cuts = [text.index(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def _run(gen: Generator, reqs: list[Request]) -> Iterator[None]:
    """Step the scheduler until every request is done; yields once per finished request."""
    done = 0
    while gen.sched.busy:
        gen.sched.step()
        now = sum(r.finished for r in reqs)
        for _ in range(now - done):
            yield
        done = now


def generate_texts(
    model: GPT,
    tok: BPETokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    run_tools: bool,
    dtype: torch.dtype = torch.float32,
    seed: int | Sequence[int] = 0,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    desc: str | None = None,
    batch: int = 16,
) -> list[dict[str, Any]]:
    """One {"text", "tool_results"} per prompt; seed is one int for all or one per prompt.

    A prompt that leaves no room to answer in the model's context gets an empty answer.
    Generation runs in the weights' own dtype (`dtype` is for an engine that converts them).
    """
    seeds = [seed] * len(prompts) if isinstance(seed, int) else list(seed)
    gen = Generator(model, tok, None, slots=max(1, min(batch, len(prompts))))
    reqs: list[Request | None] = []
    for prompt, s in zip(prompts, seeds):
        if len(prompt) + 1 >= gen.max_len:
            reqs.append(None)
            continue
        params = SamplingParams(
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=s,
            stop=list(stop),
            stop_token_ids=[tok.bos_id],  # a base model that starts a new document has finished
        ).validate(model.cfg.vocab_size)
        req = Request(list(prompt), params, run_tools)
        gen.sched.add(req)
        reqs.append(req)
    live = [r for r in reqs if r is not None]
    steps = _run(gen, live)
    for _ in progress(steps, total=len(live), desc=desc) if desc else steps:
        pass
    out = []
    for r in reqs:
        c = r.completions[0] if r is not None else None
        if c is None:
            out.append({"text": "", "tool_results": []})
        else:
            out.append({"text": _cut(c.final_text, stop), "tool_results": list(c.tool_results)})
    return out
