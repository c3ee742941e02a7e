"""From task examples to token ids: few-shot selection and prompt formats (text or chat).

Few-shot examples come from the file's `"split": "fewshot"` lines when it has them, else
from the other evaluated examples (never the example itself), drawn by a seeded RNG keyed
by the example's index, so a prompt is the same in every run and on every rank.
"""

from __future__ import annotations

import random
from typing import Any

from chatsmith.eval.tasks import Task
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt


def fewshot_examples(task: Task, index: int, seed: int) -> list[dict[str, Any]]:
    k = task.config["num_fewshot"]
    if k == 0:
        return []
    rng = random.Random(seed * 1_000_003 + index)
    if task.fewshot_pool:
        pool = task.fewshot_pool
    else:
        pool = [ex for i, ex in enumerate(task.examples) if i != index]
    return rng.sample(pool, min(k, len(pool)))


def _shot_text(task: Task, ex: dict[str, Any]) -> str:
    """A solved example as it appears in a few-shot prompt."""
    delim = task.config["target_delimiter"]
    if task.type == "multiple_choice":
        return ex["context"] + delim + ex["choices"][ex["gold"]]
    if task.type == "generative":
        return ex["prompt"] + delim + ex.get("target", ex["answer"])
    if task.type == "code":
        return ex["prompt"] + ex.get("canonical_solution", "")
    return ""


def prefix_text(task: Task, index: int, seed: int) -> str:
    """The few-shot examples, each followed by the delimiter ('' without few-shot)."""
    sep = task.config["fewshot_delimiter"]
    return "".join(_shot_text(task, ex) + sep for ex in fewshot_examples(task, index, seed))


def text_ids(tok: BPETokenizer, text: str) -> list[int]:
    """A plain-text prompt starts with BOS, as every pretraining document does."""
    return [tok.bos_id, *tok.encode(text)]


def chat_ids(tok: BPETokenizer, user_text: str) -> list[int]:
    return encode_prompt(tok, [{"role": "user", "content": user_text}])


def mc_context_ids(tok: BPETokenizer, task: Task, index: int, seed: int) -> list[int]:
    ex = task.examples[index]
    text = prefix_text(task, index, seed) + ex["context"]
    return chat_ids(tok, text) if task.config["format"] == "chat" else text_ids(tok, text)


def mc_continuation_ids(tok: BPETokenizer, task: Task, choice: str) -> list[int]:
    """The scored tokens of one choice: in chat format the answer is a whole assistant turn."""
    if task.config["format"] == "chat":
        return [*tok.encode(choice), tok.im_end_id]
    return tok.encode(task.config["target_delimiter"] + choice)


def generation_prompt_ids(tok: BPETokenizer, task: Task, index: int, seed: int) -> list[int]:
    """The prompt of a generative, chat or code example."""
    ex = task.examples[index]
    if task.type == "chat":
        return encode_prompt(tok, ex["messages"])
    text = prefix_text(task, index, seed) + ex["prompt"]
    if task.type == "generative" and task.config["format"] == "chat":
        return chat_ids(tok, text)
    return text_ids(tok, text)
