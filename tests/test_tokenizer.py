"""Tests for the byte-level BPE tokenizer (chatsmith.tokenizer.bpe) and its special tokens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatsmith.common.errors import ChatsmithError
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.special import SPECIAL_TOKENS

_FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ROUND_TRIP = [
    "",
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces   ",
    "I'm sure you'll like it; they've said we're DONE.",
    "人工智能領域知名科學家",
    "我是一个助手。你好，世界！",
    "mixed 中文 and English 123",
    "emoji 😀🎉 thumbs 👍🏽",
    "family 👨‍👩‍👧‍👦 and rainbow flag 🏳️‍🌈",
    "flags 🇯🇵🇺🇸🇫🇷",
    "def f(x):\n\tif x:\n\t\treturn x + 1\n\n\treturn 0\r\n",
    "\t\t  \n\n\n   \r\n",
    "\x00\x01\x07\x1b[0m\x7f\u200b\ufeff",
    "numbers 0 12 345 6789 12345678901234567890 3.14159 -42 ١٢٣",
    '{"name": "calculator", "arguments": {"expression": "37 * 41"}}',
    "<|im_start|>user\nhi<|im_end|>\n<tool_call>\n{}\n</tool_call>",
    "<|im_start<|im_end|>|> <tool_call <tool_call>>",
    "combining é vs é, ﬁ ligature, Ω, ∑, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_examples(tiny_tok: BPETokenizer, text: str) -> None:
    ids = tiny_tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tiny_tok.vocab_size for i in ids)
    assert tiny_tok.decode(ids) == text


@_FAST
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_round_trip_any_unicode(tiny_tok: BPETokenizer, text: str) -> None:
    assert tiny_tok.decode(tiny_tok.encode(text)) == text


@_FAST
@given(raw=st.binary(max_size=200))
def test_round_trip_random_bytes(tiny_tok: BPETokenizer, raw: bytes) -> None:
    for text in (raw.decode("utf-8", errors="replace"), raw.decode("latin-1")):
        assert tiny_tok.decode(tiny_tok.encode(text)) == text


@_FAST
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
def test_offsets_cover_the_text(tiny_tok: BPETokenizer, text: str) -> None:
    """The loss mask relies on offsets: ids match `encode`, offsets are in order and inside the text."""
    ids, offsets = tiny_tok.encode_with_offsets(text)
    assert ids == tiny_tok.encode(text)
    assert len(offsets) == len(ids)
    starts = [s for s, _ in offsets]
    assert starts == sorted(starts)
    assert all(0 <= s < e <= len(text) for s, e in offsets)


def test_encode_batch_matches_encode(tiny_tok: BPETokenizer, tiny_corpus_texts: list[str]) -> None:
    texts = ROUND_TRIP + tiny_corpus_texts[:50]
    batch = tiny_tok.encode_batch(texts)
    assert batch == [tiny_tok.encode(t) for t in texts]
    assert tiny_tok.encode_batch([]) == []


def test_special_token_ids(tiny_tok: BPETokenizer) -> None:
    assert [tiny_tok.token_id(s) for s in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert [tiny_tok.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] == SPECIAL_TOKENS
    assert tiny_tok.bos_id == 0
    assert tiny_tok.im_end_id == SPECIAL_TOKENS.index("<|im_end|>")
    with pytest.raises(KeyError):
        tiny_tok.token_id("<|not_a_token|>")


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_token_is_one_token_in_text(tiny_tok: BPETokenizer, special: str) -> None:
    sid = tiny_tok.token_id(special)
    assert tiny_tok.encode(special) == [sid]
    for before, after in [
        ("hello", "world"),
        ("x ", " y"),
        ("\n", "\n"),
        ("中文", "😀"),
        ("<", ">"),
        ("|", "|"),
    ]:
        ids = tiny_tok.encode(before + special + after)
        assert ids.count(sid) == 1
        k = ids.index(sid)
        assert ids[:k] == tiny_tok.encode(before)
        assert ids[k + 1 :] == tiny_tok.encode(after)
    # Special ids never come out of ordinary text.
    assert not set(tiny_tok.encode("im_start im_end tool_call <| |> </ >")) & set(range(len(SPECIAL_TOKENS)))


def test_decode_skip_special(tiny_tok: BPETokenizer) -> None:
    ids = tiny_tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert tiny_tok.decode(ids, skip_special=True) == "user\nhi"


def test_save_load_round_trip(tiny_tok: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokenizer.json"
    tiny_tok.save(path)
    assert path.is_file()
    for where in (path, tmp_path / "sub", str(path)):
        loaded = BPETokenizer.load(where)
        assert loaded.fingerprint() == tiny_tok.fingerprint()
        assert loaded.vocab_size == tiny_tok.vocab_size
        for text in ROUND_TRIP:
            assert loaded.encode(text) == tiny_tok.encode(text)


def test_fingerprint(tiny_tok: BPETokenizer, tiny_corpus_texts: list[str]) -> None:
    fp = tiny_tok.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    # Training is deterministic: the same corpus gives the same tokenizer.
    assert BPETokenizer.train(tiny_corpus_texts, vocab_size=600).fingerprint() == fp
    # A different vocabulary gives a different fingerprint.
    assert BPETokenizer.train(tiny_corpus_texts, vocab_size=400).fingerprint() != fp


def test_load_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(ChatsmithError):
        BPETokenizer.load(tmp_path / "nope.json")
    with pytest.raises(ChatsmithError):
        BPETokenizer.load(tmp_path)  # a directory without tokenizer.json


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all",
        b"\xff\xfe\x00\x81garbage",
        b"{}",
        b"[]",
        b"null",
        b'{"version": "1.0"}',
        b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}',
    ],
)
def test_load_garbage_raises(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "tokenizer.json"
    p.write_bytes(content)
    with pytest.raises(ChatsmithError):
        BPETokenizer.load(p)


def test_load_truncated_raises(tiny_tok: BPETokenizer, tmp_path: Path) -> None:
    full = tiny_tok.tok.to_str().encode()
    p = tmp_path / "tokenizer.json"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(ChatsmithError):
        BPETokenizer.load(p)


def test_load_without_special_tokens_raises(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    p = tmp_path / "tokenizer.json"
    Tokenizer(models.BPE()).save(str(p))
    with pytest.raises(ChatsmithError, match="special tokens"):
        BPETokenizer.load(p)


@pytest.mark.parametrize("vocab_size", [0, 100, 256, 256 + len(SPECIAL_TOKENS)])
def test_train_too_small_vocab_raises(vocab_size: int, tiny_corpus_texts: list[str]) -> None:
    with pytest.raises(ChatsmithError):
        BPETokenizer.train(tiny_corpus_texts, vocab_size=vocab_size)


def test_train_smallest_vocab(tiny_corpus_texts: list[str]) -> None:
    tok = BPETokenizer.train(tiny_corpus_texts[:20], vocab_size=256 + len(SPECIAL_TOKENS) + 1)
    assert tok.decode(tok.encode("人工智能 strawberry")) == "人工智能 strawberry"


@pytest.mark.parametrize("digits", ["7", "42", "123", "1234", "1234567", "12345678901234567890", "1517"])
def test_numbers_split_in_groups_of_three(tiny_tok: BPETokenizer, digits: str) -> None:
    for text in (digits, f"x{digits}y", f"Total: {digits}.", f"{digits} * {digits}"):
        ids = tiny_tok.encode(text)
        pieces = [tiny_tok.decode([i]) for i in ids]
        assert "".join(pieces) == text
        for piece in pieces:
            if any(c.isdigit() for c in piece):
                assert piece.isdigit(), (text, pieces)  # digits never merge with other characters
                assert len(piece) <= 3, (text, pieces)
    # A run of digits is chunked left to right: 1234567 -> 123 | 456 | 7 (token boundaries respected).
    _, offsets = tiny_tok.encode_with_offsets("1234567")
    starts = {s for s, _ in offsets}
    assert {0, 3, 6} <= starts


def test_pre_tokenizer_splits_digits_in_threes(tiny_tok: BPETokenizer) -> None:
    pieces = [p for p, _ in tiny_tok.tok.pre_tokenizer.pre_tokenize_str("x 12345678 = 9")]
    # (byte-level alphabet: "Ġ" is the space)
    assert pieces == ["x", "Ġ", "123", "456", "78", "Ġ=", "Ġ", "9"]


def test_no_token_has_more_than_three_digits() -> None:
    """Even trained on little but long numbers, no merge joins more than 3 digits or digits and letters."""
    corpus = ["1234567890 3141592653589793 2718281828 year2024 v12345"] * 50
    tok = BPETokenizer.train(corpus, vocab_size=400)
    assert tok.vocab_size > 280  # enough merges were made for the check to mean something
    for i in range(tok.vocab_size):
        piece = tok.decode([i])
        if any(c.isdigit() for c in piece):
            assert piece.isdigit() and len(piece) <= 3, piece


def _word_ids(tok: BPETokenizer, text: str, word: str) -> list[int]:
    """The ids of the tokens that cover `word` in `text`; they must cover exactly it."""
    start = text.index(word)
    end = start + len(word)
    ids, offsets = tok.encode_with_offsets(text)
    inside = [i for i, (s, e) in zip(ids, offsets) if s < end and e > start]
    covered = [(s, e) for (s, e) in offsets if s < end and e > start]
    assert covered[0][0] == start and covered[-1][1] == end, (
        f"a token crosses the edge of {word!r} in {text!r}"
    )
    return inside


@pytest.mark.parametrize(
    "word", ["strawberry", "banana", "mississippi", "raspberry", "Strawberry", "zyzzyva"]
)
def test_word_tokenizes_the_same_in_tool_call_and_question(tiny_tok: BPETokenizer, word: str) -> None:
    in_json = _word_ids(tiny_tok, f'{{"word": "{word}", "letter": "r"}}', word)
    in_question = _word_ids(tiny_tok, f'How many r are in "{word}"?', word)
    assert in_json == in_question == tiny_tok.encode(word)
    # The reason: the split pattern cuts the word out on its own, whatever a bigger vocabulary merges.
    for text in (f'{{"word": "{word}"}}', f'in "{word}"?'):
        assert word in [p for p, _ in tiny_tok.tok.pre_tokenizer.pre_tokenize_str(text)]
    # ... and the same in a rendered tool call (`"word": "` is followed by the word).
    in_call = _word_ids(
        tiny_tok, f'<tool_call>\n{{"name": "count_letters", "arguments": {{"word": "{word}"}}}}', word
    )
    assert in_call == in_json
