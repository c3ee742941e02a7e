"""Preference pairs in TRL's JSONL format, their encoding, and a batch loader.

One pair per record (a JSONL line, or a row of Parquet, Arrow or a saved HF dataset):
`{"prompt": [...messages], "chosen": [...messages], "rejected": [...messages]}` (a plain string
prompt is one user message, a plain string answer one assistant message; without `prompt`, the
messages chosen and rejected share from the start are the prompt, as TRL reads them).
Only the tokens of the answers are scored: the prompt is shared and masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.chat.chat_jsonl import Skipped, check_messages, read_records
from chatsmith.data.chat.epochs import EpochOrder
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_conversation


@dataclass
class PrefPair:
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]  # the answer's messages only (usually one assistant message)
    rejected: list[dict[str, Any]]
    source: str = ""  # "file:line" or "synthetic:<kind>"
    kind: str = ""  # what the pair teaches, for per-kind accuracy


@dataclass
class EncodedPair:
    chosen: tuple[list[int], list[int]]  # ids, 0/1 mask of the tokens that are scored
    rejected: tuple[list[int], list[int]]
    kind: str = ""


def _messages(obj: Any, key: str, role: str) -> list[dict[str, Any]]:
    if key not in obj:
        raise ChatsmithError(f"the pair has no '{key}'")
    v = obj[key]
    if isinstance(v, str):
        if not v.strip() and key != "prompt":
            raise ChatsmithError(f"'{key}' is empty")
        return [{"role": role, "content": v}]
    if isinstance(v, list) and not v:
        raise ChatsmithError(f"'{key}' is empty")
    return check_messages(v, key)


def implicit_prompt(obj: dict[str, Any]) -> dict[str, Any]:
    """TRL's implicit-prompt form (no 'prompt'; chosen and rejected are whole conversations, as in
    UltraFeedback binarized): the messages both share from the start are the prompt."""
    c, r = obj.get("chosen"), obj.get("rejected")
    if "prompt" in obj or not (isinstance(c, list) and isinstance(r, list)):
        return obj
    n = 0
    while n < min(len(c), len(r)) and c[n] == r[n]:
        n += 1
    return {**obj, "prompt": c[:n], "chosen": c[n:], "rejected": r[n:]}


def parse_pair(obj: Any, source: str = "") -> PrefPair:
    if not isinstance(obj, dict):
        raise ChatsmithError("a line must be a JSON object with 'prompt', 'chosen' and 'rejected'")
    obj = implicit_prompt(obj)
    pair = PrefPair(
        _messages(obj, "prompt", "user"),
        _messages(obj, "chosen", "assistant"),
        _messages(obj, "rejected", "assistant"),
        source,
        str(obj.get("kind", "")),
    )
    for key in ("chosen", "rejected"):
        answer = getattr(pair, key)
        if not any(m["role"] == "assistant" for m in answer):
            raise ChatsmithError(f"'{key}' has no assistant message")
        if not any((m.get("content") or "").strip() or m.get("tool_calls") for m in answer):
            raise ChatsmithError(f"'{key}' is empty")
    return pair


def read_preferences(
    path: str | Path, skip_bad: bool = False, skipped: Skipped | None = None
) -> list[PrefPair]:
    """Every pair of a preference data file; a bad record is an error naming its place."""
    return read_records(path, "preference", parse_pair, skip_bad, skipped)


def encode_answer(
    tok: BPETokenizer, prompt: list[dict[str, Any]], answer: list[dict[str, Any]]
) -> tuple[list[int], list[int]]:
    """ids of prompt + answer, and a mask that is 1 only on the answer's trained tokens."""
    ids, mask = encode_conversation(tok, prompt + answer)
    prompt_ids = encode_conversation(tok, prompt)[0]
    n_prompt = len(prompt_ids)
    # Turns render independently and each ends in "\n" before a special token, so the
    # prompt's tokens are a prefix of the whole; anything else would score the wrong tokens.
    if ids[:n_prompt] != prompt_ids:
        raise ChatsmithError("the prompt does not tokenize as a prefix of prompt + answer")
    return ids, [0] * n_prompt + mask[n_prompt:]


def encode_pairs(
    tok: BPETokenizer,
    pairs: list[PrefPair],
    max_tokens: int,
    skip_bad: bool = False,
    skipped: Skipped | None = None,
) -> list[EncodedPair]:
    """Encode pairs; one longer than max_tokens is an error or a counted drop (never truncated)."""
    skipped = skipped if skipped is not None else Skipped()
    out = []
    for p in pairs:
        c, r = encode_answer(tok, p.prompt, p.chosen), encode_answer(tok, p.prompt, p.rejected)
        n = max(len(c[0]), len(r[0]))
        if n > max_tokens:
            if not skip_bad:
                raise ChatsmithError(
                    f"{p.source}: the pair is {n} tokens, longer than the context of {max_tokens}; "
                    "shorten it, raise the sequence length, or pass --skip-bad to leave it out (it is never "
                    "truncated)"
                )
            skipped.add("longer than the context", p.source)
            continue
        out.append(EncodedPair(c, r, p.kind))
    return out


def collate(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Inputs and targets of 2B rows (the B chosen answers, then the B rejected), right-padded.

    `last` is the index of each row's final real input position (where a reward head reads) and
    `answer` marks the input positions that hold the answer's tokens.
    """
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    last = torch.zeros(len(rows), dtype=torch.long)
    answer = torch.zeros(len(rows), T)
    for i, (ids, mask) in enumerate(rows):
        answer[i, : len(ids) - 1] = torch.tensor(mask[:-1], dtype=torch.float32)
        t = torch.tensor(ids)
        m = torch.tensor(mask[1:], dtype=torch.bool)
        x[i, : len(ids) - 1] = t[:-1]
        y[i, : len(ids) - 1] = torch.where(m, t[1:], torch.tensor(-1))
        last[i] = len(ids) - 2
    return {"x": x, "y": y, "last": last, "answer": answer}


class PairLoader:
    """Batches of B pairs, reshuffled each epoch from the seed; rank r of W takes its own B pairs
    of every step (chat.epochs), so the ranks see each pair once an epoch."""

    def __init__(
        self, pairs: list[EncodedPair], batch_size: int, seed: int, pad_id: int, rank: int = 0, world: int = 1
    ) -> None:
        if not pairs:
            raise ChatsmithError("no preference pairs to train on")
        self.pairs, self.B, self.seed, self.pad_id = pairs, batch_size, seed, pad_id
        self.rank, self.world = rank, world
        self.step = 0
        self.order = EpochOrder(len(pairs), seed)

    @property
    def rows_per_epoch(self) -> int:
        """Pairs in one pass over the data, for all ranks together."""
        return len(self.pairs)

    @property
    def rows_per_batch(self) -> int:
        """Pairs one rank reads per next_batch()."""
        return self.B

    def next_batch(self) -> dict[str, torch.Tensor]:
        picked = [self.pairs[i] for i in self.order.take(self.step, self.B, self.rank, self.world)]
        self.step += 1
        return collate(picked, self.pad_id)

    def batches(self) -> list[dict[str, torch.Tensor]]:
        """Every pair once, in order (for evaluation)."""
        return [collate(self.pairs[i : i + self.B], self.pad_id) for i in range(0, len(self.pairs), self.B)]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
