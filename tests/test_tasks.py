"""Each task's check and reward, and the mixture's grading that hands an example to its task."""

from __future__ import annotations

import random
from types import ModuleType

import pytest

from chatsmith.common.config import IdentityConfig
from chatsmith.tasks import arithmetic, counting, identity, instructions, multi_turn, spelling, word_problems
from chatsmith.tasks.common import Example
from chatsmith.tasks.mixture import TASKS, check, extra_checks, generators, reward

WORDS = ["strawberry", "banana", "python", "module", "letter", "buffer", "thread", "socket"]


def _examples(task: str, n: int = 40) -> list[Example]:
    gen = generators(IdentityConfig(), WORDS)[task]
    rng = random.Random(7)
    return [gen(rng, split) for split in ("train", "heldout") for _ in range(n // 2)]


@pytest.mark.parametrize("task", list(generators(IdentityConfig(), WORDS)))
def test_reward_is_one_for_the_gold_answer_and_zero_for_a_wrong_one(task: str) -> None:
    for ex in _examples(task):
        gold = ex.messages[-1]["content"]
        assert check(ex, gold) and reward(ex, gold) == 1.0, (ex.task, gold)
        assert not check(ex, "I do not know.") and reward(ex, "I do not know.") == 0.0, ex.task


@pytest.mark.parametrize(
    ("task", "module"),
    [
        ("identity_en", identity),
        ("identity_zh", identity),
        ("arithmetic", arithmetic),
        ("counting", counting),
        ("spelling", spelling),
        ("instructions", instructions),
        ("multi_turn", multi_turn),
        ("word_problems", word_problems),
    ],
)
def test_the_mixture_grades_an_example_by_its_own_task(task: str, module: ModuleType) -> None:
    replies = ["", "42", "chatsmith", "我是 chatsmith", "s-t-r", "Your name is Alice."]
    for ex in _examples(task, 10):
        for r in [ex.messages[-1]["content"], *replies]:
            assert check(ex, r) == module.check(ex, r)
            assert reward(ex, r) == module.reward(ex, r) == float(check(ex, r))


def test_a_task_file_subtask_is_graded_by_containment() -> None:
    ex = Example("from_a_file", [], [], "Paris")
    assert "from_a_file" not in TASKS
    assert check(ex, "It is paris.") and reward(ex, "It is paris.") == 1.0
    assert not check(ex, "Lyon") and extra_checks(ex, "Paris") == {}


def test_counting_alone_has_a_stricter_secondary_check() -> None:
    ex = _examples("counting", 2)[0]
    gold = ex.messages[-1]["content"]
    assert extra_checks(ex, gold) == {"counting_word_exact": True}
    assert extra_checks(ex, gold.replace(f'"{ex.meta["word"]}"', "it")) == {"counting_word_exact": False}
    assert extra_checks(_examples("spelling", 2)[0], gold) == {}


def test_general_answers_are_words_and_whole_numbers() -> None:
    from chatsmith.tasks import general

    q = {e.meta["accept"][0]: e for e in general.general_questions("heldout")}
    continents, butterfly = q["7"], q["butterfl"]
    assert general.check(continents, "There are 7 continents.") and general.check(continents, "Seven.")
    assert not general.check(continents, "The Earth is approximately 129.9999999675277777620")
    assert not general.check(continents, "About 75 of them.")
    assert general.check(butterfly, "They turn into butterflies.")
    assert not general.check(butterfly, "a behemoth")
