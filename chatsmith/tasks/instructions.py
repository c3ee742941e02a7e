"""Short instructions: repeat a word n times, the next letter of the alphabet, a range of numbers."""

from __future__ import annotations

import random

from chatsmith.tasks.common import Example, split_of


def instruction(rng: random.Random, split: str, words: list[str]) -> Example:
    kind = rng.choice(["repeat", "next_letter", "range"])
    while True:
        if kind == "repeat":
            w, n = rng.choice(words), rng.randint(2, 5)
            key, q = (w, n), f'Repeat the word "{w}" {n} times.'
            a = " ".join([w] * n)
        elif kind == "next_letter":
            c = rng.choice("abcdefghijklmnopqrstuvwxy")
            fmt = rng.choice(
                ['What letter comes after "{c}" in the alphabet?', '字母表中 "{c}" 后面是哪个字母？']
            )
            key, q, a = (c, fmt), fmt.format(c=c), chr(ord(c) + 1)
        else:
            s = rng.randint(1, 50)
            e = s + rng.randint(2, 6)
            key, q = (s, e), f"List the numbers from {s} to {e}."
            a = ", ".join(str(i) for i in range(s, e + 1))
        if split_of(f"instruction_{kind}", key) == split:
            break
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example("instructions", msgs, msgs[:1], a)


def check(ex: Example, reply: str) -> bool:
    """The reply is the answer exactly (a closing full stop aside)."""
    return reply.strip().rstrip(".。") == ex.answer


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))
