"""The demo's preference pairs: what DPO and the reward model must learn to tell apart.

Four kinds, each a contrast a user would care about:
- correct: after the calculator or counting tool answered, the final answer that states the
  tool's result against one that states a wrong number;
- polite: the plain helpful answer against the same answer wrapped in a rude remark;
- language: an answer in the user's language against the same answer in the other one;
- exact: the exact answer against a near miss of the kind the SFT model makes (a misspelt
  spelling, a list that runs past its end, a word repeated once too often, the counted word
  quoted back wrong), covering the demo's exact-answer tasks.
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


def _near_miss(rng: random.Random, text: str, sep: str) -> str:
    """The answer with one slip: an item of a list dropped, repeated or two items swapped."""
    items = text.split(sep)
    i = rng.randrange(len(items))
    how = rng.choice(["repeat", "drop", "swap"]) if len(items) > 2 else "repeat"
    if how == "repeat":
        items.insert(i, items[i])
    elif how == "drop":
        items = items[:i] + items[i + 1 :]
    else:
        j = (i + 1) % len(items)
        items[i], items[j] = items[j], items[i]
    out = sep.join(items)
    return out if out != text else text + sep + items[-1]


def exact_pair(rng: random.Random, split: str, words: list[str]) -> PrefPair:
    r = rng.random()
    if r < 0.35:
        ex = spelling(rng, split, words)
        wrong = _near_miss(rng, ex.answer, "-")
    elif r < 0.7:
        ex = instruction(rng, split, words)
        sep = ", " if "," in ex.answer else " "
        wrong = _near_miss(rng, ex.answer, sep) if sep in ex.answer else chr(ord(ex.answer) + 1)
    else:  # counting: the same count, the word quoted back misspelt
        ex = counting(rng, split, words)
        w = ex.meta.get("word", "")
        final = ex.messages[-1]["content"]
        bad = _near_miss(rng, "-".join(w), "-").replace("-", "") if len(w) > 1 else w + w
        wrong = final.replace(f'"{w}"', f'"{bad}"') if bad != w else final + "!"
    answer = ex.messages[-1]
    return PrefPair(
        ex.messages[:-1], [answer], [{**answer, "content": wrong}], f"synthetic:{ex.task}", "exact"
    )


KINDS = ("correct", "polite", "language", "exact")


def preference_pairs(
    n: int, seed: int, split: str, ident: IdentityConfig, words: list[str]
) -> list[PrefPair]:
    """n pairs, the kinds in turn, reproducible from the seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "correct":
            out.append(correct_pair(rng, split, words))
        elif kind == "polite":
            out.append(polite_pair(rng, split, words))
        elif kind == "exact":
            out.append(exact_pair(rng, split, words))
        else:
            out.append(language_pair(rng, split, ident))
    return out
