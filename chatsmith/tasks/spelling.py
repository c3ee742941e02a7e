"""Spelling: "Spell the word ..." answered letter by letter, joined with hyphens."""

from __future__ import annotations

import random

from chatsmith.tasks.common import Example, split_of


def spelling(rng: random.Random, split: str, words: list[str]) -> Example:
    while True:
        w = rng.choice(words)
        if split_of("spelling", w) == split:
            break
    q = rng.choice(['Spell the word "{w}".', 'How do you spell "{w}"?', '请拼写 "{w}"。']).format(w=w)
    a = "-".join(w)
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example("spelling", msgs, msgs[:1], a)


def check(ex: Example, reply: str) -> bool:
    """The reply is the spelling exactly (a closing full stop aside)."""
    return reply.strip().rstrip(".。") == ex.answer


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))
