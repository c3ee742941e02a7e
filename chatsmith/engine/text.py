"""From a completion's token ids to the text a user sees, one token at a time.

Special tokens and Hermes tool-call blocks are not text (tool calls are reported on
their own); a multi-byte character split across tokens is held back until complete;
stop strings are found across token boundaries, cut from the output, and any text that
might be the start of one is held back until it is clearly not.
"""

from __future__ import annotations

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


@dataclass
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
        self._ids.append(token)
        # Decode a short window (as vLLM does) so each token costs O(1), not O(length).
        before = self.tok.decode(self._ids[self._prefix : self._read])
        now = self.tok.decode(self._ids[self._prefix :])
        if now.endswith("\ufffd"):
            return Pushed()
        delta = now[len(before) :]
        self._prefix, self._read = self._read, len(self._ids)
        start = max(0, len(self._text) - max((len(s) for s in self.stop), default=0))
        self._text += delta
        if self.stop:
            hits = [i for i in (self._text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self._text = self._text[: min(hits)]
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
        """At the end of the completion: release what was held back."""
        return self._release(len(self._text))

    def new_segment(self) -> str:
        """A built-in tool result was fed back: the text so far closes a segment."""
        held = self.flush()
        self.segments.append(self._text)
        self._ids, self._prefix, self._read, self._text, self._released = [], 0, 0, "", 0
        return held

    @property
    def text(self) -> str:
        return "".join(self.segments) + self._text

    @property
    def final_text(self) -> str:
        return self._text
