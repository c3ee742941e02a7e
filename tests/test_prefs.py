"""Preference pairs: validation, encoding (only the answer is scored), the loader, the demo's pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatsmith.common.config import IdentityConfig
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.chat.chat_jsonl import Skipped
from chatsmith.data.chat.preferences import PairLoader, encode_pairs, read_preferences
from chatsmith.tasks.common import Example, split_of
from chatsmith.tasks.mixture import check
from chatsmith.tasks.preference_pairs import preference_pairs

PAIR = {
    "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
    "chosen": [{"role": "assistant", "content": "4."}],
    "rejected": [{"role": "assistant", "content": "5."}],
}
WORDS = ["banana", "letter", "count", "strawberry", "apple", "python", "module"]


def write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"chosen": []}, "'chosen' is empty"),
        ({"chosen": [{"role": "assistant", "content": "  "}]}, "'chosen' is empty"),
        ({"rejected": [{"content": "x"}]}, "message 0 has no role"),
        ({"prompt": [{"role": "boss", "content": "x"}]}, "unknown role"),
        ({"chosen": [{"role": "user", "content": "x"}]}, "no assistant message"),
    ],
)
def test_bad_pairs_name_file_and_line(tmp_path: Path, change: dict, needle: str) -> None:
    f = write(tmp_path / "prefs.jsonl", [PAIR, {**PAIR, **change}])
    with pytest.raises(ChatsmithError) as e:
        read_preferences(f)
    assert f"{f}:2:" in str(e.value) and needle in str(e.value)
    skipped = Skipped()
    assert len(read_preferences(f, skip_bad=True, skipped=skipped)) == 1 and skipped.total == 1


def test_string_forms_are_accepted(tmp_path: Path) -> None:
    f = write(tmp_path / "p.jsonl", [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}])
    (p,) = read_preferences(f)
    assert p.prompt == [{"role": "user", "content": "Hi?"}] and p.chosen[0]["role"] == "assistant"


def test_only_the_answer_is_scored_and_the_loader_resumes(tmp_path: Path, tiny_tok) -> None:
    pairs = read_preferences(write(tmp_path / "p.jsonl", [PAIR] * 5))
    enc = encode_pairs(tiny_tok, pairs, 256)
    ids, mask = enc[0].chosen
    scored = tiny_tok.decode([t for t, m in zip(ids, mask) if m], skip_special=False)
    assert scored == "4.<|im_end|>"
    loader = PairLoader(enc, 2, seed=0, pad_id=tiny_tok.bos_id)
    b = loader.next_batch()
    assert b["x"].shape[0] == 4 and (b["y"][0] != -1).sum() == sum(mask[1:])
    # The reward head reads the <|im_end|> that closes each answer.
    assert int(b["x"][0, b["last"][0]]) == tiny_tok.im_end_id
    state = loader.state_dict()
    want = loader.next_batch()
    again = PairLoader(enc, 2, seed=0, pad_id=tiny_tok.bos_id)
    again.load_state_dict(state)
    assert all((again.next_batch()[k] == want[k]).all() for k in want)


def test_too_long_pair_is_an_error_or_counted(tiny_tok) -> None:
    from chatsmith.data.chat.preferences import PrefPair

    long = PrefPair(
        PAIR["prompt"], [{"role": "assistant", "content": "la " * 300}], PAIR["rejected"], "f.jsonl:7"
    )
    with pytest.raises(ChatsmithError, match=r"f\.jsonl:7: .*longer than the context"):
        encode_pairs(tiny_tok, [long], 64)
    skipped = Skipped()
    assert encode_pairs(tiny_tok, [long], 64, skip_bad=True, skipped=skipped) == [] and skipped.total == 1


def test_demo_pairs_contrast_what_they_claim_and_respect_the_split() -> None:
    train = preference_pairs(300, 1, "train", IdentityConfig(), WORDS)
    held = preference_pairs(90, 2, "heldout", IdentityConfig(), WORDS)
    assert {p.kind for p in train} == {"correct", "polite", "language", "exact"}
    for p in train + held:
        assert p.chosen != p.rejected
        if p.kind == "exact":  # the chosen answer passes its task's exact check, the near miss fails it
            ex = Example(p.source.split(":")[1], [], p.prompt, "", {})
            ok, bad = p.chosen[0]["content"], p.rejected[0]["content"]
            if ex.task == "counting":
                assert ok.replace(" ", "") != bad.replace(" ", "") and ok.count('"') == bad.count('"')
            else:
                ex.answer = ok
                assert check(ex, ok) and not check(ex, bad)
        if p.kind == "correct":
            assert p.prompt[-1]["role"] == "tool" and p.prompt[-1]["content"] in p.chosen[0]["content"]
        if p.kind == "language":
            zh_q = any("\u4e00" <= ch <= "\u9fff" for ch in p.prompt[-1]["content"])
            zh_a = any("\u4e00" <= ch <= "\u9fff" for ch in p.chosen[0]["content"])
            assert zh_q == zh_a
    for p in held:
        if p.kind == "correct" and p.source == "synthetic:arithmetic":
            a, op, b = p.prompt[1]["tool_calls"][0]["function"]["arguments"]["expression"].split()
            assert split_of("arithmetic", (int(a), op, int(b))) == "heldout"
