"""What every task shares: the Example record, the held-out split, tool turns and the checks.

Every example has a key (the numbers, the word, the phrasing) and a stable hash of the
key puts it in exactly one split, so held-out questions never appear in training.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

HELD_OUT_PERCENT = 15  # share of each task's key space reserved for evaluation


@dataclass
class Example:
    task: str
    messages: list[dict[str, Any]]  # the whole conversation, for training
    prompt: list[dict[str, Any]]  # the conversation up to the question, for evaluation
    answer: str  # what a correct final answer must contain (checked by `check`)
    meta: dict[str, Any] = field(default_factory=dict)


def split_of(task: str, key: Any) -> str:
    h = int(hashlib.sha256(f"{task}|{key}".encode()).hexdigest()[:8], 16)
    return "heldout" if h % 100 < HELD_OUT_PERCENT else "train"


def tool_turns(
    question: str, name: str, args: dict[str, Any], result: str, final: str
) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}],
        },
        {"role": "tool", "content": result},
        {"role": "assistant", "content": final},
    ]


# Names for the people in multi-turn chats and word problems (and the eval's own word problems).
NAMES = [
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Ivy",
    "Jack",
    "Karen",
    "Leo",
    "Maria",
    "Noah",
    "Olivia",
    "Peter",
    "Quinn",
    "Rosa",
    "Sam",
    "Tina",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yuki",
    "Zoe",
    "Ahmed",
    "Bruno",
    "Chen",
    "Diego",
    "Elena",
    "Farah",
    "Hana",
    "Igor",
    "Julia",
    "Kenji",
    "Lina",
    "Mateo",
    "Nina",
    "Omar",
    "Priya",
    "Ravi",
    "Sofia",
    "Tom",
    "Wei",
    "Yara",
    "Amir",
    "Bella",
]


def word_list(texts: list[str], limit: int = 4000) -> list[str]:
    """Lower-case alphabetic words of 3-10 letters from a corpus, most frequent first."""
    counts: dict[str, int] = {}
    for t in texts:
        for w in re.findall(r"\b[a-z]{3,10}\b", t):
            counts[w] = counts.get(w, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:limit]


_INT = re.compile(r"-?\d+")


def last_number_is(ex: Example, reply: str) -> bool:
    """Correct when the last integer in the reply (thousands commas ignored) is the answer."""
    nums = _INT.findall(reply.replace(",", ""))
    return bool(nums) and nums[-1] == ex.answer


def contains_answer(ex: Example, reply: str) -> bool:
    """Correct when the answer appears in the reply, ignoring case."""
    return ex.answer.lower() in reply.lower()


class Task(Protocol):
    """What eval and RL need of a task module (tasks/word_problems.py is one): the check of
    a reply, and the reward RL trains on, which is the same judgement as a number."""

    def check(self, ex: Example, reply: str) -> bool: ...

    def reward(self, ex: Example, reply: str) -> float: ...
