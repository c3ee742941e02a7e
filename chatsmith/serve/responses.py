"""Engine events -> OpenAI response objects and SSE chunks (chat and legacy completions)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from chatsmith.serve.backend import Event
from chatsmith.serve.convert import parse_forced
from chatsmith.tokenizer.bpe import BPETokenizer

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "cancelled": "stop"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(obj: dict[str, Any] | str) -> str:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


def token_str(tok: BPETokenizer, t: int) -> str:
    return tok.decode([t])


def logprob_entry(tok: BPETokenizer, ev: Event) -> dict[str, Any]:
    s = token_str(tok, ev.token)
    return {
        "token": s,
        "logprob": ev.logprob,
        "bytes": list(s.encode("utf-8")),
        "top_logprobs": [
            {"token": (ts := token_str(tok, t)), "logprob": lp, "bytes": list(ts.encode("utf-8"))}
            for t, lp in ev.top_logprobs
        ],
    }


@dataclass
class Choice:
    """What one choice accumulated from its events."""

    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    token_events: list[Event] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None
    error: str | None = None

    def content(self) -> str:
        return "".join(self.text)


def tool_calls_out(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id("call"),
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": c["arguments"]
                if isinstance(c["arguments"], str)
                else json.dumps(c["arguments"], ensure_ascii=False),
            },
        }
        for c in raw
    ]


class ChoiceTracker:
    """Feeds events into Choice records; knows about primed tool calls and logprobs."""

    def __init__(self, tok: BPETokenizer, n: int, want_logprobs: bool, forced_tool: str | None) -> None:
        self.tok, self.want_lp, self.forced = tok, want_logprobs, forced_tool
        self.choices = [Choice(i) for i in range(n)]
        self.prompt_tokens = 0

    def feed(self, ev: Event) -> Choice:
        c = self.choices[ev.index]
        if ev.kind == "token":
            if ev.token >= 0:
                c.token_events.append(ev)
                if self.want_lp:
                    c.logprobs.append(logprob_entry(self.tok, ev))
            c.text.append(ev.text)
        elif ev.kind == "done":
            d = ev.data
            c.text.append(ev.text)
            c.completion_tokens = d.get("completion_tokens", 0)
            self.prompt_tokens = d.get("prompt_tokens", self.prompt_tokens)
            c.prompt_logprobs = d.get("prompt_logprobs")
            reason = d.get("finish_reason", "stop")
            if reason == "error":
                c.error = d.get("error") or "the engine failed"
            if self.forced is not None:
                name, args = parse_forced(self.forced, c.content())
                c.tool_calls = tool_calls_out([{"name": name, "arguments": args}])
                c.text, reason = [], "tool_calls"
            elif reason == "tool_calls":
                c.tool_calls = tool_calls_out(d.get("tool_calls") or [])
            c.finish_reason = FINISH.get(reason, "stop")
        return c

    def usage(self) -> dict[str, int]:
        done = sum(c.completion_tokens for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


def chat_response(rid: str, model: str, created: int, tr: ChoiceTracker, primed: str) -> dict[str, Any]:
    choices = []
    for c in tr.choices:
        text = c.content()
        msg: dict[str, Any] = {"role": "assistant", "content": (primed + text) if (text or primed) else None}
        if c.tool_calls:
            msg["tool_calls"] = c.tool_calls
            msg["content"] = text or None
        choices.append(
            {
                "index": c.index,
                "message": msg,
                "logprobs": {"content": c.logprobs} if tr.want_lp else None,
                "finish_reason": c.finish_reason,
            }
        )
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": tr.usage(),
        "system_fingerprint": None,
    }


def chat_chunk(rid: str, model: str, created: int, choices: list[dict[str, Any]], usage: Any = None) -> dict:
    out = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def completion_choice(
    tok: BPETokenizer, idx: int, c: Choice, prompt: list[int], prompt_text: str, echo: bool, want_lp: bool
) -> dict[str, Any]:
    gen_text = c.content()
    text = (prompt_text + gen_text) if echo else gen_text
    logprobs = None
    if want_lp:
        tokens: list[str] = []
        lps: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        if echo:
            plp = c.prompt_logprobs or [None] * len(prompt)
            for i, t in enumerate(prompt):
                s = token_str(tok, t)
                tokens.append(s)
                lp = plp[i] if i < len(plp) else None
                lps.append(lp)
                # Only the prompt token's own logprob is known for prompt positions.
                tops.append(None if lp is None else {s: lp})
        for ev in c.token_events:
            tokens.append(token_str(tok, ev.token))
            lps.append(ev.logprob)
            tops.append({token_str(tok, t): lp for t, lp in ev.top_logprobs} or None)
        offsets, n = [], 0
        for s in tokens:
            offsets.append(n)
            n += len(s)
        logprobs = {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
    return {"index": idx, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason}


def now() -> int:
    return int(time.time())
