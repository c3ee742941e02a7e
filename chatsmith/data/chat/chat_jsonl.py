"""Conversations in TRL's format: reading, validation, encoding and weighted mixtures.

One conversation per record: `{"messages": [{"role", "content", "tool_calls"?}, ...], "tools"?: [...]}`,
a line of JSONL or a row of Parquet, Arrow or a saved HF dataset (records.py).
Every problem names the file and line. With `skip_bad` a bad line is skipped and counted
by reason instead, and the counts are reported; a conversation longer than the context
is dropped whole (counted), never truncated, so no assistant answer is ever cut short.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import warn
from chatsmith.data.chat.records import iter_records
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import ROLES, encode_conversation, validate

T = TypeVar("T")


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    source: str = ""  # "file:line", for messages about this conversation


@dataclass
class Skipped:
    """Counts of left-out items by reason, and the first few places, for the report."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        return {"total": self.total, **dict(self.counts)}

    def report(self, stage: str) -> None:
        """One warning line with the counts, and the first places, when anything was left out."""
        if self.total:
            reasons = ", ".join(f"{n} {r}" for r, n in self.counts.most_common())
            warn(
                f"[{stage}] skipped {self.total} bad or too long item(s): {reasons}; e.g. {self.examples[0]}"
            )


def check_messages(messages: Any, what: str = "messages") -> list[dict[str, Any]]:
    """Validate one list of chat messages; the error says which message and what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ChatsmithError(f"'{what}' must be a non-empty list of messages")
    try:
        validate(messages)
    except ChatsmithError as e:
        raise ChatsmithError(f"'{what}': {e}") from None
    for i, m in enumerate(messages):
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", tc) if isinstance(tc, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ChatsmithError(f"'{what}': message {i} has a tool call without a name")
            args = fn.get("arguments", {})
            if isinstance(args, str):
                try:
                    json.loads(args)
                except json.JSONDecodeError:
                    raise ChatsmithError(
                        f"'{what}': message {i} has tool-call arguments that are not JSON"
                    ) from None
            elif not isinstance(args, dict):
                raise ChatsmithError(f"'{what}': message {i} has tool-call arguments that are not an object")
        if m.get("tool_calls") and m["role"] != "assistant":
            raise ChatsmithError(f"'{what}': message {i} has tool calls but role {m['role']!r}")
    return messages


def tools_system_text(tools: list[dict[str, Any]]) -> str:
    """The tool schemas as Qwen's chat template puts them into the system prompt."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{lines}\n</tools>\n\nFor each function call, return a json object with function name "
        "and arguments within <tool_call></tool_call> XML tags."
    )


def with_tools(messages: list[dict[str, Any]], tools: Any) -> list[dict[str, Any]]:
    """Put the `tools` schemas into the system prompt (after any system text the user gave)."""
    if tools in (None, []):
        return messages
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ChatsmithError("'tools' must be a list of function schemas (objects)")
    text = tools_system_text(tools)
    if messages[0]["role"] == "system":
        return [{**messages[0], "content": (messages[0].get("content") or "") + "\n\n" + text}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def parse_conversation(obj: Any) -> list[dict[str, Any]]:
    if not isinstance(obj, dict) or "messages" not in obj:
        raise ChatsmithError("a line must be a JSON object with a 'messages' list")
    msgs = check_messages(obj["messages"])
    if not any(m["role"] == "assistant" for m in msgs):
        raise ChatsmithError("the conversation has no assistant message, so nothing would be trained")
    return with_tools(msgs, obj.get("tools"))


def read_records(
    path: str | Path,
    what: str,
    parse: Callable[[Any, str], T],
    skip_bad: bool = False,
    skipped: Skipped | None = None,
) -> list[T]:
    """parse(obj, "file:line") of every record of a data file (JSONL, Parquet, Arrow or a saved
    HF dataset: records.py); a bad record (bad JSON, or parse raising ChatsmithError) is an
    error naming its place, or a counted skip with skip_bad."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ChatsmithError(f"no {what} file at {path}")
    skipped = skipped if skipped is not None else Skipped()
    out = []
    for where, obj in iter_records(path):
        try:
            if isinstance(obj, ChatsmithError):
                raise obj
            out.append(parse(obj, where))
        except ChatsmithError as e:
            if not skip_bad:
                raise ChatsmithError(
                    f"{where}: {e} (fix the line, or pass --skip-bad to skip and count it)"
                ) from None
            skipped.add(str(e), where)
    return out


def read_conversations(
    path: str | Path, skip_bad: bool = False, skipped: Skipped | None = None
) -> list[Conversation]:
    """Every conversation of a TRL-format data file; a bad record is an error naming its place."""
    return read_records(
        path,
        "conversation",
        lambda obj, where: Conversation(parse_conversation(obj), where),
        skip_bad,
        skipped,
    )


def encode_conversations(
    tok: BPETokenizer,
    convs: list[Conversation],
    max_tokens: int,
    skip_bad: bool = False,
    skipped: Skipped | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(ids, mask) of each conversation; one longer than max_tokens is an error or a counted drop."""
    skipped = skipped if skipped is not None else Skipped()
    out = []
    for c in convs:
        ids, mask = encode_conversation(tok, c.messages)
        if len(ids) > max_tokens:
            if not skip_bad:
                raise ChatsmithError(
                    f"{c.source}: the conversation is {len(ids)} tokens, longer than the context of "
                    f"{max_tokens}; shorten it, raise the sequence length, or pass --skip-bad to leave "
                    "it out (it is never truncated)"
                )
            skipped.add("longer than the context", c.source)
            continue
        out.append((ids, mask))
    return out


def parse_source(spec: str) -> tuple[str, float]:
    """`path.jsonl` or `path.jsonl:WEIGHT` (weight = passes over the file; 0.5 = a random half)."""
    path, sep, w = spec.rpartition(":")
    try:
        weight = float(w) if sep else 1.0
    except ValueError:  # a colon that is part of the path
        path, weight = spec, 1.0
    path = path if sep and path else spec
    if weight <= 0:
        raise ChatsmithError(f"data source '{spec}': the weight must be > 0")
    return path, weight


def weighted_mixture(sources: list[tuple[list[Any], float]], seed: int) -> list[Any]:
    """Each source repeated `weight` times (the fraction by a seeded sample), then shuffled together."""
    rng = random.Random(seed)
    out: list[Any] = []
    for items, weight in sources:
        whole, frac = int(weight), weight - int(weight)
        out += items * whole
        out += rng.sample(items, round(frac * len(items))) if frac and items else []
    rng.shuffle(out)
    return out


__all__ = [
    "ROLES",
    "Conversation",
    "Skipped",
    "check_messages",
    "encode_conversations",
    "parse_source",
    "read_conversations",
    "weighted_mixture",
    "with_tools",
]
