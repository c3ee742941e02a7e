"""A stored branch of a conversation -> the messages of a prompt that fits the context.

The system prompt and the last user message always stay. When the whole branch does not
fit `budget` tokens, the oldest turns go first (a turn: a user message and the answers
that follow it); when the last user message alone is still too long, its start is cut
and its end kept, as a reader of a long paste cares most about the question at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.serve.store import Message
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt, render

# Tokens kept for the answer when the request sets no max_tokens (at most a quarter of the context).
DEFAULT_RESERVE = 256


@dataclass
class Fitted:
    messages: list[dict[str, Any]]
    trimmed: int  # messages of the branch left out (oldest first)
    truncated: bool  # the last user message lost its start
    prompt_tokens: int


def as_chat(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content or ""}
    if m.role == "assistant" and m.tool_calls:
        d["tool_calls"] = m.tool_calls
    return d


def reserve(context: int, max_tokens: int | None) -> int:
    """Tokens held back for the answer; the prompt gets the rest."""
    want = max_tokens if max_tokens else min(DEFAULT_RESERVE, context // 4)
    return max(1, min(want, context // 2))


def fit(tok: BPETokenizer, system: str, branch: list[dict[str, Any]], budget: int) -> Fitted:
    """The prompt's messages within `budget` tokens (the branch ends with a user message)."""
    head = [{"role": "system", "content": system}] if system else []

    def size(msgs: list[dict[str, Any]]) -> int:
        return len(encode_prompt(tok, head + msgs))

    n = size(branch)
    if n <= budget:
        return Fitted(head + branch, 0, False, n)
    # Drop whole turns from the front. Each message's own size is a close estimate (the
    # special tokens split the text, so sizes add up); only a cut that may fit is encoded.
    costs = [len(tok.encode(render([m])[0])) for m in branch]
    after = list(accumulate(reversed(costs)))[::-1]  # after[s]: the size of branch[s:]
    fixed = size([]) if head else 0
    for s in [i for i, m in enumerate(branch) if m["role"] == "user" and i > 0]:
        if fixed + after[s] > budget * 1.1:
            continue
        n = size(branch[s:])
        if n <= budget:
            return Fitted(head + branch[s:], s, False, n)
    return _truncate_last(tok, head, branch[-1], budget, len(branch) - 1)


def _truncate_last(
    tok: BPETokenizer, head: list[dict[str, Any]], last: dict[str, Any], budget: int, dropped: int
) -> Fitted:
    frame = len(encode_prompt(tok, [*head, {**last, "content": ""}]))
    room = budget - frame
    if room <= 0:
        raise ChatsmithError(
            f"the system prompt alone takes {frame} of the {budget} tokens the prompt may use; shorten it"
        )
    ids = tok.encode(last["content"])
    keep = room
    while keep > 0:
        # A cut inside a character decodes to U+FFFD at the start; drop it.
        text = tok.decode(ids[-keep:]).lstrip("\ufffd")
        msgs = [*head, {**last, "content": text}]
        n = len(encode_prompt(tok, msgs))
        if n <= budget:
            return Fitted(msgs, dropped, True, n)
        keep -= max(1, n - budget)
    raise ChatsmithError("the last message does not fit the context")
