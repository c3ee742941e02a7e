"""The demo's preference pairs: what DPO and the reward model must learn to tell apart.

Three kinds, each a contrast a user would care about:
- correct: after the calculator or counting tool answered, the final answer that states the
  tool's result against one that states a wrong number;
- polite: the plain helpful answer against the same answer wrapped in a rude remark;
- language: an answer in the user's language against the same answer in the other one.
Pairs inherit the held-out split of the synthetic task they are built on (a hash of the
question's key), so held-out pairs never share a question with training pairs.
"""

from __future__ import annotations

import random

from chatsmith.common.config import IdentityConfig
from chatsmith.data.chat.preferences import PrefPair
from chatsmith.tasks.arithmetic import arithmetic
from chatsmith.tasks.counting import counting
from chatsmith.tasks.identity import identity
from chatsmith.tasks.instructions import instruction
from chatsmith.tasks.spelling import spelling

RUDE = [
    "Ugh, that's a silly question. {a}",
    "{a} Obviously. Don't waste my time.",
    "Figure it out yourself next time. {a}",
    "Seriously? Fine: {a}",
    "{a} Even a child knows that.",
    "What a dumb thing to ask. {a}",
]


def _wrong(rng: random.Random, right: int) -> int:
    """A plausible wrong number: off by a little, by a digit, or reversed."""
    while True:
        w = rng.choice(
            [
                right + rng.choice([-2, -1, 1, 2]),
                right + rng.choice([-100, -10, 10, 100]),
                rng.randint(0, max(10, 2 * abs(right))),
            ]
        )
        if w != right:
            return w


def correct_pair(rng: random.Random, split: str, words: list[str]) -> PrefPair:
    # Mostly counting: a demo-sized reward model learns to compare a short count with the tool's
    # (97 % held out) long before it can compare multi-digit sums (near chance after 100 steps).
    ex = arithmetic(rng, split) if rng.random() < 0.3 else counting(rng, split, words)
    final = ex.messages[-1]["content"]
    right = int(ex.answer)
    # The answer's number appears last in the final sentence; the wrong one replaces it there only.
    head, _, tail = final.rpartition(str(right))
    wrong = head + str(_wrong(rng, right)) + tail
    answer = ex.messages[-1]
    return PrefPair(
        ex.messages[:-1], [answer], [{**answer, "content": wrong}], f"synthetic:{ex.task}", "correct"
    )


def polite_pair(rng: random.Random, split: str, words: list[str]) -> PrefPair:
    ex = spelling(rng, split, words) if rng.random() < 0.5 else instruction(rng, split, words)
    a = ex.messages[-1]["content"]
    rude = rng.choice(RUDE).format(a=a)
    return PrefPair(
        ex.prompt,
        [ex.messages[-1]],
        [{"role": "assistant", "content": rude}],
        f"synthetic:{ex.task}",
        "polite",
    )


def language_pair(rng: random.Random, split: str, ident: IdentityConfig) -> PrefPair:
    lang = rng.choice(["en", "zh"])
    ex = identity(rng, split, ident, lang)
    # The same question's answer in the other language: another draw's answer serves.
    other = identity(random.Random(rng.random()), "train", ident, "zh" if lang == "en" else "en")
    wrong_lang = {"role": "assistant", "content": other.messages[-1]["content"]}
    return PrefPair(ex.prompt, [ex.messages[-1]], [wrong_lang], f"synthetic:{ex.task}", "language")


KINDS = ("correct", "polite", "language")


def preference_pairs(
    n: int, seed: int, split: str, ident: IdentityConfig, words: list[str]
) -> list[PrefPair]:
    """n pairs, the three kinds in turn, reproducible from the seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "correct":
            out.append(correct_pair(rng, split, words))
        elif kind == "polite":
            out.append(polite_pair(rng, split, words))
        else:
            out.append(language_pair(rng, split, ident))
    return out
