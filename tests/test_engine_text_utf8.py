"""A completion stopped mid-character (at max_tokens, a stop id or a tool call) shows no
half character: the incomplete bytes are dropped, never shown as U+FFFD."""

from __future__ import annotations

import pytest

from chatsmith.engine.text import TurnText, _bytes_to_unicode, special_ids


def byte_ids(tok, data: bytes) -> list[int]:
    """Single-byte tokens (a byte-level BPE has all 256), as a model may emit them."""
    table = _bytes_to_unicode()
    return [tok.token_id(table[b]) for b in data]


@pytest.mark.parametrize("cut", [1, 2])
@pytest.mark.parametrize("stop", [[], ["zz"]])
def test_a_reply_cut_inside_a_character_ends_before_it(tiny_tok, cut: int, stop: list[str]) -> None:
    ids = tiny_tok.encode("Hi 你好") + byte_ids(tiny_tok, "世".encode()[:cut])
    tt = TurnText(tiny_tok, stop, special_ids(tiny_tok))
    streamed = "".join(tt.push(t).text for t in ids) + tt.flush()
    assert streamed == tt.text == "Hi 你好"


def test_a_character_split_over_tokens_still_arrives_whole(tiny_tok) -> None:
    ids = tiny_tok.encode("Hi ") + byte_ids(tiny_tok, "世界".encode())
    tt = TurnText(tiny_tok, [], special_ids(tiny_tok))
    parts = [tt.push(t).text for t in ids]
    assert "".join(parts) + tt.flush() == "Hi 世界"
    assert all("\ufffd" not in p for p in parts)


def test_invalid_bytes_inside_a_reply_stay_visible(tiny_tok) -> None:
    """Only an unfinished character at the end is dropped; a broken one mid-text is shown."""
    ids = tiny_tok.encode("a") + byte_ids(tiny_tok, b"\xe4\xb8") + tiny_tok.encode("b")
    tt = TurnText(tiny_tok, [], special_ids(tiny_tok))
    assert "".join(tt.push(t).text for t in ids) + tt.flush() == "a\ufffdb"
