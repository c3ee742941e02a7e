"""The demo's task mix: every synthetic task by name, the weighted mixture, and grading by task.

SFT trains on `mixture`; the report evaluates held-out questions of the EVAL_TASKS; eval
grades a reply with `check` (and `extra_checks`) and RL scores one with `reward`, each of
which hands the example to its own task's function.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType

from chatsmith.common.config import IdentityConfig
from chatsmith.tasks import arithmetic, counting, identity, instructions, multi_turn, spelling, word_problems
from chatsmith.tasks.common import Example, contains_answer

WEIGHTS = {
    "identity": 2,
    "arithmetic": 3,
    "counting": 5,
    "spelling": 1,
    "instructions": 1,
    "multi_turn": 1,
    # Few on purpose: SFT should solve the multi-step problems only partly, leaving RL room to
    # improve. At weight 2 the demo's SFT model solved 95.5 % and GRPO had nothing to learn;
    # at 0.3 it solves a quarter to a third, and 90 GRPO steps add 11-16 points.
    "word_problems": 0.3,
}

# How many held-out questions of each task the report evaluates, by EvalConfig field.
EVAL_TASKS = {
    "arithmetic": "arithmetic",
    "counting": "counting",
    "identity_en": "identity",
    "identity_zh": "identity",
    "spelling": "other",
    "instructions": "other",
    "multi_turn": "other",
    "word_problems": "other",
}


def generators(ident: IdentityConfig, words: list[str]) -> dict[str, Callable[[random.Random, str], Example]]:
    """Each task's generator by name: (rng, split) -> Example."""
    return {
        "identity": lambda r, s: identity.identity(r, s, ident),
        "identity_en": lambda r, s: identity.identity(r, s, ident, "en"),
        "identity_zh": lambda r, s: identity.identity(r, s, ident, "zh"),
        "arithmetic": arithmetic.arithmetic,
        "counting": lambda r, s: counting.counting(r, s, words),
        "spelling": lambda r, s: spelling.spelling(r, s, words),
        "instructions": lambda r, s: instructions.instruction(r, s, words),
        "multi_turn": multi_turn.multi_turn,
        "word_problems": word_problems.word_problem,
    }


def mixture(n: int, seed: int, split: str, ident: IdentityConfig, words: list[str]) -> list[Example]:
    """n examples drawn from the weighted task mix, reproducible from the seed."""
    rng = random.Random(seed)
    gens = generators(ident, words)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    return [gens[rng.choices(names, weights)[0]](rng, split) for _ in range(n)]


# RL's prompts: mostly the multi-step word problems it is meant to improve, and some of every
# other task the demo evaluates, so the policy keeps being rewarded for what SFT taught it
# (with word problems alone, GRPO made counting and instructions worse). Tasks whose answers
# the model already always gets right teach nothing (their groups have zero advantage), so
# the ones it gets partly right weigh more.
RL_WEIGHTS = {
    "word_problems": 6,
    "counting": 2,
    "instructions": 1,
    "spelling": 1,
    "arithmetic": 1,
    "identity": 0.5,
    "multi_turn": 0.5,
}


def rl_problems(n: int, seed: int, split: str, ident: IdentityConfig, words: list[str]) -> list[Example]:
    """n RL prompts from the RL_WEIGHTS mix (graded by this module's check and reward)."""
    rng = random.Random(seed)
    gens = generators(ident, words)
    names, weights = list(RL_WEIGHTS), list(RL_WEIGHTS.values())
    return [gens[rng.choices(names, weights)[0]](rng, split) for _ in range(n)]


# Each task's module by Example.task; every identity_* task is graded as identity, and a task
# not named here (a task file's own subtask) by whether the answer is in the reply.
TASKS: dict[str, ModuleType] = {
    "identity": identity,
    "arithmetic": arithmetic,
    "counting": counting,
    "spelling": spelling,
    "instructions": instructions,
    "multi_turn": multi_turn,
    "word_problems": word_problems,
}


def _task_of(ex: Example) -> ModuleType | None:
    return TASKS.get("identity" if ex.task.startswith("identity") else ex.task)


def check(ex: Example, reply: str) -> bool:
    """Is the model's final reply a correct answer to the example?"""
    task = _task_of(ex)
    return task.check(ex, reply) if task else contains_answer(ex, reply)


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    task = _task_of(ex)
    return task.reward(ex, reply) if task else float(contains_answer(ex, reply))


def extra_checks(ex: Example, reply: str) -> dict[str, bool]:
    """Stricter secondary figures reported beside a task's accuracy (counting has one)."""
    return counting.extra_checks(ex, reply) if ex.task == "counting" else {}
