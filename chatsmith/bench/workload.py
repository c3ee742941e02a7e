"""What `chatsmith bench generate` feeds both sides: prompts of an exact length, and the
settings the two sides share (dtypes, concurrencies, how many greedy tokens must agree)."""

from __future__ import annotations

import torch

from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt

CONCURRENCY = (8, 32)
MATCH_TOKENS = 16  # greedy tokens compared between the two, in float32
# Plain text that fills the user turn to the asked prompt length (no special tokens).
FILLER = (
    "The quick brown fox jumps over the lazy dog. A tokenizer turns text into numbers that a "
    "model can read, and the model predicts the next number. She sold sea shells by the sea "
    "shore in 2024; the weather today is sunny and the answer is 1517."
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_prompt(tok: BPETokenizer, n: int, salt: str = "") -> list[int]:
    """n token ids: a user turn of plain text cut to fit, then the assistant header, as
    `encode_prompt` frames it; below the size of that frame, n tokens of plain text. salt:
    words the text starts with, to make prompts that share no start worth caching."""
    frame = encode_prompt(tok, [{"role": "user", "content": ""}])
    cut = frame.index(tok.im_end_id)  # the <|im_end|> closing the (empty) user turn
    head, tail = frame[:cut], frame[cut:]
    room = n - len(head) - len(tail)
    text: list[int] = []
    k = 1
    while len(text) < max(room, n):
        text = tok.encode(salt + " ".join([FILLER] * k))
        k *= 2
    return head + text[:room] + tail if room > 0 else text[:n]


def variants(tok: BPETokenizer, n_tokens: int, count: int) -> list[list[int]]:
    """count different prompts of exactly n_tokens each (the filler text shifted)."""
    base = build_prompt(tok, n_tokens + count)
    return [base[:2] + base[2 + i : n_tokens + i] for i in range(count)]
