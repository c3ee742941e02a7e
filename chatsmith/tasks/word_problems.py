"""Multi-step arithmetic word problems for the demo, answered through the calculator tool.

"Ann has 12 apples. Ann buys 3 bags of 7 and gives away 9. How many apples does Ann have
now?" The assistant must turn the story into one expression (`12 + 3 * 7 - 9`), call the
calculator and state the result. Each step is easy; chaining two or three of them, in
varied phrasings, is what a small SFT model gets only partly right, which leaves RL room
to improve it. A stable hash of the problem's key (the expression) puts it in exactly one
split, as for every task (`common.split_of`). GRPO trains on this task.
"""

from __future__ import annotations

import random

from chatsmith.tasks.common import NAMES, Example, last_number_is, split_of, tool_turns

ITEMS = ["apples", "books", "coins", "stamps", "marbles", "pencils", "cards", "shells", "cookies", "stickers"]

# (phrase, operator) per step kind; "{n}" is the step's number, "{k}" a second factor.
ADD = ["buys {n} more", "finds {n} more", "gets {n} from a friend", "receives {n} as a gift", "wins {n}"]
SUB = ["gives away {n}", "loses {n}", "sells {n}", "gives {n} to a friend", "uses {n}"]
# Numbers appear in the story in the order the expression uses them (x * y), so each step is a copy.
MUL = ["buys {x} bags of {y}", "gets {x} boxes with {y} in each", "collects {x} a day for {y} days"]
START = ["{name} has {a} {items}.", "{name} starts with {a} {items}.", "{name} owns {a} {items}."]
QUESTION = [
    "How many {items} does {name} have now?",
    "How many {items} are left?",
    "How many {items} does {name} end up with?",
]


def _step(rng: random.Random, total: int) -> tuple[str, str, int]:
    """One step: (phrase, expression part, new total). Totals never go below zero."""
    kind = rng.choice(["add", "sub", "mul"] if total > 3 else ["add", "mul"])
    if kind == "add":
        n = rng.randint(2, 40)
        return rng.choice(ADD).format(n=n), f"+ {n}", total + n
    if kind == "sub":
        n = rng.randint(1, total)
        return rng.choice(SUB).format(n=n), f"- {n}", total - n
    x, y = rng.randint(2, 9), rng.randint(2, 12)
    return rng.choice(MUL).format(x=x, y=y), f"+ {x} * {y}", total + x * y


def word_problem(rng: random.Random, split: str) -> Example:
    while True:
        a = rng.randint(5, 60)
        n_steps = rng.choice([2, 2, 3])
        total, phrases, parts = a, [], [str(a)]
        for _ in range(n_steps):
            phrase, part, total = _step(rng, total)
            phrases.append(phrase)
            parts.append(part)
        expr = " ".join(parts)
        if split_of("word_problem", expr) == split:
            break
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    story = rng.choice(START).format(name=name, a=a, items=items)
    # Steps are chained as "Then she ..." sentences, or joined with "and" in one sentence.
    if rng.random() < 0.5:
        story += " " + " ".join(f"Then {name} {p}." for p in phrases)
    else:
        story += f" {name} " + ", ".join(phrases[:-1]) + f" and {phrases[-1]}."
    q = f"{story} {rng.choice(QUESTION).format(name=name, items=items)}"
    final = f"{name} has {total} {items} now."
    msgs = tool_turns(q, "calculator", {"expression": expr}, str(total), final)
    return Example("word_problems", msgs, msgs[:1], str(total), {"expression": expr, "steps": n_steps})


def word_problems(n: int, seed: int, split: str) -> list[Example]:
    """n problems of one split, reproducible from the seed."""
    rng = random.Random(seed)
    return [word_problem(rng, split) for _ in range(n)]


def check(ex: Example, reply: str) -> bool:
    """Correct when the last number of the final reply is the answer."""
    return last_number_is(ex, reply)


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))
