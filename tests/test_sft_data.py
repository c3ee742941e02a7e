"""TRL-format conversation files: validation with file:line, --skip-bad counts, mixtures, SFT packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.chat.chat_jsonl import (
    Skipped,
    encode_conversations,
    parse_source,
    read_conversations,
    weighted_mixture,
)
from chatsmith.data.chat.packing import pack_conversations
from chatsmith.tokenizer.chat_format import encode_conversation

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
TOOLS = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ],
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
}


def write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"messages": [{"content": "no role"}, {"role": "assistant", "content": "x"}]}, "has no role"),
        (
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "unknown role",
        ),
        ({"messages": []}, "non-empty list"),
        ({"text": "not a conversation"}, "'messages'"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_line_names_file_and_line(tmp_path: Path, bad, needle: str) -> None:
    f = write(tmp_path / "chats.jsonl", [GOOD, GOOD, bad])
    with pytest.raises(ChatsmithError) as e:
        read_conversations(f)
    assert f"{f}:3:" in str(e.value) and needle in str(e.value) and "--skip-bad" in str(e.value)


def test_skip_bad_counts_instead_of_failing(tmp_path: Path) -> None:
    bad_role = {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}
    f = write(tmp_path / "chats.jsonl", [GOOD, bad_role, "{oops", GOOD])
    skipped = Skipped()
    convs = read_conversations(f, skip_bad=True, skipped=skipped)
    assert len(convs) == 2 and skipped.total == 2
    assert [c.source for c in convs] == [f"{f}:1", f"{f}:4"]


def test_tools_and_system_prompt_reach_the_rendered_conversation(tmp_path: Path, tiny_tok) -> None:
    f = write(tmp_path / "tools.jsonl", [TOOLS])
    (conv,) = read_conversations(f)
    assert conv.messages[0]["role"] == "system"
    assert conv.messages[0]["content"].startswith("Be brief.") and '"weather"' in conv.messages[0]["content"]
    ids, mask = encode_conversations(tiny_tok, [conv], 10_000)[0]
    trained = tiny_tok.decode([t for t, m in zip(ids, mask) if m], skip_special=False)
    # Assistant-only loss: the tool call and the answer are trained, the tool schema and result are not.
    assert '"name": "weather"' in trained and "It is sunny." in trained
    assert "sunny\n" not in trained.replace("It is sunny.", "") and "Be brief." not in trained


def test_too_long_is_an_error_or_a_counted_drop_never_a_truncation(tmp_path: Path, tiny_tok) -> None:
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 400}]}
    f = write(tmp_path / "long.jsonl", [GOOD, long])
    convs = read_conversations(f)
    with pytest.raises(ChatsmithError, match=rf"{f}:2: .*longer than the context"):
        encode_conversations(tiny_tok, convs, 64)
    skipped = Skipped()
    enc = encode_conversations(tiny_tok, convs, 64, skip_bad=True, skipped=skipped)
    assert len(enc) == 1 and skipped.counts["longer than the context"] == 1
    # What is kept is whole: identical to encoding the conversation alone.
    assert enc[0] == encode_conversation(tiny_tok, GOOD["messages"])


def test_packing_keeps_whole_conversations_and_masks_prompts(tiny_tok) -> None:
    enc = [encode_conversation(tiny_tok, GOOD["messages"])] * 5
    ids, tgt, dropped = pack_conversations(enc, 40, tiny_tok.bos_id)
    assert dropped == 0
    n = len(enc[0][0])
    assert (tgt != -1).sum() == 5 * (sum(enc[0][1]) - enc[0][1][0])
    assert ids[0, :n].tolist() == enc[0][0]


def test_weighted_mixture_repeats_and_samples() -> None:
    a, b = list(range(10)), list(range(100, 120))
    mix = weighted_mixture([(a, 2.0), (b, 0.5)], seed=0)
    assert sorted(x for x in mix if x < 100) == sorted(a * 2)
    assert len([x for x in mix if x >= 100]) == 10
    assert mix == weighted_mixture([(a, 2.0), (b, 0.5)], seed=0)
    assert parse_source("data/x.jsonl:3") == ("data/x.jsonl", 3.0)
    assert parse_source("data/x.jsonl") == ("data/x.jsonl", 1.0)
    with pytest.raises(ChatsmithError):
        parse_source("x.jsonl:0")
