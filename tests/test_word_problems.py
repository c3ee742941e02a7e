"""The demo's multi-step word problems: right answers, a held-out split, a strict checker."""

from __future__ import annotations

import ast
import operator

from chatsmith.tasks.common import Example, split_of
from chatsmith.tasks.mixture import check
from chatsmith.tasks.word_problems import check as check_word_problem
from chatsmith.tasks.word_problems import word_problems

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(expr: str) -> int:
    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.BinOp):
            return OPS[type(n.op)](ev(n.left), ev(n.right))
        assert isinstance(n, ast.Constant)
        return n.value

    return ev(ast.parse(expr, mode="eval").body)


def test_answers_follow_from_the_story() -> None:
    for ex in word_problems(300, 0, "train"):
        expr = ex.meta["expression"]
        assert evaluate(expr) == int(ex.answer) >= 0
        call = ex.messages[1]["tool_calls"][0]["function"]
        assert call == {"name": "calculator", "arguments": {"expression": expr}}
        assert ex.messages[2] == {"role": "tool", "content": ex.answer}
        # Every number of the expression is in the question (the model has to find them there).
        q = ex.messages[0]["content"]
        assert all(tok in q for tok in expr.split() if tok.isdigit())
        assert 2 <= ex.meta["steps"] <= 3


def test_held_out_problems_never_occur_in_training() -> None:
    train = {ex.meta["expression"] for ex in word_problems(2000, 1, "train")}
    held = word_problems(200, 2, "heldout")
    assert all(split_of("word_problem", ex.meta["expression"]) == "heldout" for ex in held)
    assert not train & {ex.meta["expression"] for ex in held}


def test_checker_takes_the_last_number() -> None:
    ex = Example("word_problems", [], [], "24")
    assert check_word_problem(ex, "Ann has 24 apples now.") and check(ex, "Ann has 24 apples now.")
    assert not check_word_problem(ex, "24 ... no, Ann has 25 apples.")
    assert not check(ex, "Ann has 124 apples now.") and not check_word_problem(ex, "many")
