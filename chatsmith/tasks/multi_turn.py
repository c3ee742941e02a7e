"""Multi-turn context: the user says a name (and a favourite colour); later asks for it back."""

from __future__ import annotations

import random

from chatsmith.tasks.common import NAMES, Example, contains_answer, split_of

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown", "gray"]


def multi_turn(rng: random.Random, split: str) -> Example:
    while True:
        name, color = rng.choice(NAMES), rng.choice(COLORS)
        if split_of("multi_turn", (name, color)) == split:
            break
    msgs = [
        {
            "role": "user",
            "content": rng.choice([f"My name is {name}.", f"Hi, I'm {name}.", f"Call me {name}."]),
        },
        {"role": "assistant", "content": f"Nice to meet you, {name}!"},
    ]
    # Sometimes the question comes right away, sometimes after another exchange, so the
    # model learns to look back for the fact rather than to expect a fixed script.
    told_color = rng.random() < 0.6
    if told_color:
        msgs += [
            {"role": "user", "content": f"My favorite color is {color}."},
            {"role": "assistant", "content": f"Got it: your favorite color is {color}."},
        ]
    if not told_color or rng.random() < 0.5:
        q, a, ans = "What is my name?", f"Your name is {name}.", name
    else:
        q, a, ans = "What is my favorite color?", f"Your favorite color is {color}.", color
    msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example("multi_turn", msgs, msgs[:-1], ans, {"key": (name, color)})


def check(ex: Example, reply: str) -> bool:
    """The name or colour asked for is in the reply, ignoring case."""
    return contains_answer(ex, reply)


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))
