"""From a completion's token ids to the text a user sees, one token at a time.

Special tokens and Hermes tool-call blocks are not text (tool calls are reported on
their own); a multi-byte character split across tokens is held back until complete;
stop strings are found across token boundaries, cut from the output, and any text that
might be the start of one is held back until it is clearly not.
"""

from __future__ import annotations

import codecs
import contextlib
from dataclasses import dataclass, field

from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.special import SPECIAL_TOKENS, TOOL_CALL, TOOL_CALL_END


def token_id_or(tok: BPETokenizer, token: str, default: int = -1) -> int:
    try:
        return tok.token_id(token)
    except KeyError:
        return default


def special_ids(tok: BPETokenizer) -> set[int]:
    return {i for i in (token_id_or(tok, s) for s in SPECIAL_TOKENS) if i >= 0}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: every byte as a printable character (as `tokenizers` uses)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def byte_table(tok: BPETokenizer) -> list[bytes | None] | None:
    """The bytes of every token of a byte-level BPE (None for special tokens), so text can
    be decoded token by token in O(1); None for other tokenizers. Built once per tokenizer."""
    cached = getattr(tok, "_byte_table", False)
    if cached is not False:
        return cached
    table: list[bytes | None] | None = None
    inner = getattr(tok, "tok", None)  # the `tokenizers` object; stand-ins in tests have none
    if type(getattr(inner, "decoder", None)).__name__ == "ByteLevel":
        inv = {c: b for b, c in _bytes_to_unicode().items()}
        table = []
        for i in range(tok.vocab_size):
            piece = inner.id_to_token(i) or ""  # type: ignore[union-attr]
            table.append(bytes(inv[c] for c in piece) if piece and all(c in inv for c in piece) else None)
    with contextlib.suppress(AttributeError):  # a stand-in object may not take attributes
        tok._byte_table = table  # type: ignore[attr-defined]
    return table


@dataclass(slots=True)
class Pushed:
    text: str = ""  # newly released visible text
    stopped: bool = False  # a stop string was found (text is cut before it)
    call: list[int] | None = None  # the body of a tool call that just closed
    call_opened: bool = False


@dataclass
class TurnText:
    """The visible text of one completion, built as its tokens arrive."""

    tok: BPETokenizer
    stop: list[str]
    special: set[int]
    segments: list[str] = field(default_factory=list)  # text before each built-in tool result
    _ids: list[int] = field(default_factory=list)
    _prefix: int = 0
    _read: int = 0
    _text: str = ""
    _released: int = 0
    _call: list[int] | None = None

    def __post_init__(self) -> None:
        self.call_start = token_id_or(self.tok, TOOL_CALL)
        self.call_end = token_id_or(self.tok, TOOL_CALL_END)
        self._bytes = byte_table(self.tok)
        # Holds back the start of a multi-byte character until its last byte arrives.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> Pushed:
        if token == self.call_start:
            self._call = []
            return Pushed(call_opened=True)
        if self._call is not None:
            if token == self.call_end:
                body, self._call = self._call, None
                return Pushed(call=body)
            self._call.append(token)
            return Pushed()
        if token in self.special:
            return Pushed()
        piece = self._bytes[token] if self._bytes is not None and token < len(self._bytes) else None
        if piece is not None:
            delta = self._utf8.decode(piece)
        else:
            self._ids.append(token)
            # Decode a short window (as vLLM does) so each token costs O(1), not O(length).
            before = self.tok.decode(self._ids[self._prefix : self._read])
            now = self.tok.decode(self._ids[self._prefix :])
            if now.endswith("\ufffd"):
                return Pushed()
            delta = now[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        if not self.stop:  # the common case, and the one per-token cost here: keep it short
            self._text += delta
            return Pushed(self._release(len(self._text)))
        start = max(0, len(self._text) - max(len(s) for s in self.stop))
        self._text += delta
        hits = [i for i in (self._text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self._text = self._text[: min(hits)]
            self._utf8.reset()  # bytes after the stop string are not output
            return Pushed(self._release(len(self._text)), stopped=True)
        return Pushed(self._release(len(self._text) - self._held_back()))

    def _held_back(self) -> int:
        """Length of the longest end of the text that could begin a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self._text)), best, -1):
                if self._text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _release(self, end: int) -> str:
        end = max(end, self._released)
        out, self._released = self._text[self._released : end], end
        return out

    def flush(self) -> str:
        """At the end of the completion: release what was held back. A character cut off by
        the end (max_tokens, a stop id) is dropped: half of one would show as U+FFFD."""
        self._utf8.reset()
        return self._release(len(self._text))

    def new_segment(self) -> str:
        """A built-in tool result was fed back: the text so far closes a segment."""
        held = self.flush()
        self.segments.append(self._text)
        self._ids, self._prefix, self._read, self._text, self._released = [], 0, 0, "", 0
        self._utf8.reset()
        return held

    @property
    def text(self) -> str:
        return "".join(self.segments) + self._text

    @property
    def final_text(self) -> str:
        return self._text
