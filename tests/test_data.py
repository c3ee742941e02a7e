"""Synthetic tasks, held-out splits, packing and the loaders."""

from __future__ import annotations

import random

import numpy as np
import pytest

from chatsmith.common.config import IdentityConfig
from chatsmith.data.chat.packing import SFTLoader, pack_conversations
from chatsmith.data.tokens.loaders import PretrainLoader
from chatsmith.engine.tools import run_tool
from chatsmith.tasks.common import split_of
from chatsmith.tasks.mixture import check, generators, mixture

WORDS = [
    "strawberry",
    "banana",
    "apple",
    "python",
    "module",
    "string",
    "object",
    "letter",
    "return",
    "default",
    "value",
    "method",
    "class",
    "number",
    "header",
    "socket",
    "thread",
    "buffer",
]


def test_held_out_questions_never_appear_in_training() -> None:
    gens = generators(IdentityConfig(), WORDS[:12])
    keys = {
        "arithmetic": lambda ex: ex.meta["expression"],
        "identity_en": lambda ex: ex.messages[0]["content"],
        "identity_zh": lambda ex: ex.messages[0]["content"],
        "counting": lambda ex: ex.meta["word"],
        "spelling": lambda ex: ex.answer,
        "multi_turn": lambda ex: ex.meta["key"],
    }
    for task, key in keys.items():
        rng = random.Random(0)
        train = {key(gens[task](rng, "train")) for _ in range(400)}
        held = {key(gens[task](rng, "heldout")) for _ in range(100)}
        assert held and train and not (held & train), task


def test_arithmetic_keys_are_partitioned() -> None:
    rng = random.Random(1)
    gens = generators(IdentityConfig(), WORDS)
    train = {gens["arithmetic"](rng, "train").meta["expression"] for _ in range(2000)}
    held = {gens["arithmetic"](rng, "heldout").meta["expression"] for _ in range(300)}
    assert len(held) > 250 and not (train & held)
    assert all(
        split_of("arithmetic", (int(e.split()[0]), e.split()[1], int(e.split()[2]))) == "heldout"
        for e in held
    )


def test_tool_results_in_the_data_are_what_the_tools_return() -> None:
    for ex in mixture(300, 3, "train", IdentityConfig(), WORDS):
        msgs = ex.messages
        for i, m in enumerate(msgs):
            for tc in m.get("tool_calls") or []:
                fn = tc["function"]
                assert msgs[i + 1]["role"] == "tool"
                assert msgs[i + 1]["content"] == run_tool(fn["name"], fn["arguments"])


def test_checker_accepts_gold_and_rejects_wrong() -> None:
    for ex in mixture(200, 4, "heldout", IdentityConfig(), WORDS):
        gold = ex.messages[-1]["content"]
        assert check(ex, gold), (ex.task, gold)
        if ex.task in ("arithmetic", "counting"):
            assert not check(ex, gold.replace(ex.answer, str(int(ex.answer) + 1)))
    zh = generators(IdentityConfig(), WORDS)["identity_zh"](random.Random(0), "heldout")
    assert not check(zh, "I am chatsmith.")  # a Chinese question needs a Chinese answer


def test_packing_keeps_conversations_whole_and_masks_targets() -> None:
    convs = [
        ([1, 2, 3, 4], [0, 0, 1, 1]),
        ([5, 6, 7], [0, 1, 1]),
        (list(range(20)), [1] * 20),
        ([8, 9], [0, 1]),
    ]
    ids, tgt, dropped = pack_conversations(convs, seq_len=7, pad_id=0)
    assert dropped == 1  # the 20-token conversation does not fit a row and is counted
    assert ids.shape == (2, 8) and tgt.shape == (2, 7)
    assert ids[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 0]
    # target t is ids[t+1] when ids[t+1] is trained, else -1
    assert tgt[0].tolist() == [-1, 3, 4, -1, 6, 7, -1]
    assert ids[1, :2].tolist() == [8, 9] and tgt[1].tolist() == [9, -1, -1, -1, -1, -1, -1]


def test_pretrain_loader_tiles_the_stream_and_ranks_split_it() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    one = PretrainLoader(tokens, batch_size=4, seq_len=10)
    x, y = one.next_batch()
    assert x[0].tolist() == list(range(10)) and y[0].tolist() == list(range(1, 11))
    assert x[1, 0].item() == 10
    r0, r1 = PretrainLoader(tokens, 2, 10, rank=0, world=2), PretrainLoader(tokens, 2, 10, rank=1, world=2)
    rows = {tuple(r) for r in r0.next_batch()[0].tolist()} | {tuple(r) for r in r1.next_batch()[0].tolist()}
    assert rows == {tuple(r) for r in x.tolist()}  # two ranks see exactly the one-process batch


@pytest.mark.parametrize("cls", ["pretrain", "sft"])
def test_loader_resume_continues_exactly(cls: str) -> None:
    if cls == "pretrain":
        make = lambda: PretrainLoader(np.arange(5000, dtype=np.uint16), 3, 16)  # noqa: E731
    else:
        ids = np.arange(50 * 9).reshape(50, 9)
        make = lambda: SFTLoader(ids, ids[:, 1:], 4, seed=5)  # noqa: E731
    a = make()
    for _ in range(30):  # past the end of an epoch for the SFT loader
        a.next_batch()
    b = make()
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        assert all((p == q).all() for p, q in zip(a.next_batch(), b.next_batch()))
