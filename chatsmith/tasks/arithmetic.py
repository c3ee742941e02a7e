"""Arithmetic through the calculator tool: two- and three-digit sums, differences and products.

The assistant calls `calculator` with the expression and states its result; the check
compares the last number of the final reply with the result.
"""

from __future__ import annotations

import random

from chatsmith.tasks.common import Example, last_number_is, split_of, tool_turns

OPS = {"+": ("plus", "加"), "-": ("minus", "减"), "*": ("times", "乘以")}
ARITH_EN = [
    "What is {a} {op} {b}?",
    "What is {a} {w} {b}?",
    "Calculate {a} {op} {b}.",
    "Compute {a} {op} {b}",
    "{a} {op} {b} = ?",
    "Please work out {a} {op} {b}.",
    "What's {a} {w} {b}?",
    "How much is {a} {op} {b}?",
]
ARITH_ZH = ["{a} {z} {b} 等于多少？", "计算 {a} {op} {b}。", "{a} {op} {b} 等于几？"]


def arithmetic(rng: random.Random, split: str) -> Example:
    while True:
        op = rng.choice("+-*")
        a = rng.randint(10, 999) if rng.random() < 0.5 else rng.randint(10, 99)
        b = rng.randint(10, 999) if rng.random() < 0.5 else rng.randint(10, 99)
        if split_of("arithmetic", (a, op, b)) == split:
            break
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    zh = rng.random() < 0.2
    tmpl = rng.choice(ARITH_ZH if zh else ARITH_EN)
    q = tmpl.format(a=a, b=b, op=op, w=OPS[op][0], z=OPS[op][1])
    expr = f"{a} {op} {b}"
    final = f"{expr} = {result}" + ("。" if zh else ".")
    msgs = tool_turns(q, "calculator", {"expression": expr}, str(result), final)
    return Example("arithmetic", msgs, msgs[:1], str(result), {"expression": expr})


def check(ex: Example, reply: str) -> bool:
    """The last number of the final reply is the result."""
    return last_number_is(ex, reply)


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))
