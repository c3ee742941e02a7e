"""Engine events -> OpenAI response objects (response_models.py) and SSE chunks."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from chatsmith.serve.backend import Event
from chatsmith.serve.convert import parse_forced
from chatsmith.serve.response_models import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    FunctionCall,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from chatsmith.tokenizer.bpe import BPETokenizer

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "cancelled": "stop"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(obj: BaseModel | str) -> str:
    """One server-sent event; the JSON is written as JSONResponse writes it (compact, UTF-8)."""
    if isinstance(obj, BaseModel):
        obj = json.dumps(obj.model_dump(), ensure_ascii=False, separators=(",", ":"))
    return f"data: {obj}\n\n"


def token_str(tok: BPETokenizer, t: int) -> str:
    return tok.decode([t])


def _top(tok: BPETokenizer, t: int, lp: float) -> TopLogprob:
    s = token_str(tok, t)
    return TopLogprob(token=s, logprob=lp, bytes=list(s.encode("utf-8")))


def logprob_entry(tok: BPETokenizer, ev: Event) -> TokenLogprob:
    s = token_str(tok, ev.token)
    top = [_top(tok, t, lp) for t, lp in ev.top_logprobs]
    return TokenLogprob(token=s, logprob=ev.logprob, bytes=list(s.encode("utf-8")), top_logprobs=top)


@dataclass
class Choice:
    """What one choice accumulated from its events."""

    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    token_events: list[Event] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None
    error: str | None = None

    def content(self) -> str:
        return "".join(self.text)


def tool_calls_out(raw: list[dict[str, Any]]) -> list[ToolCall]:
    """The engine's calls ({"name", "arguments"}) as OpenAI tool calls with fresh ids."""
    out = []
    for c in raw:
        args = c["arguments"]
        args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        out.append(ToolCall(id=new_id("call"), function=FunctionCall(name=c["name"], arguments=args)))
    return out


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

    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, sum(c.completion_tokens for c in self.choices))


def _message(c: Choice, primed: str) -> AssistantMessage:
    text = c.content()
    if c.tool_calls:
        return AssistantMessage(content=text or None, tool_calls=c.tool_calls)
    return AssistantMessage(content=(primed + text) if (text or primed) else None)


def chat_response(rid: str, model: str, created: int, tr: ChoiceTracker, primed: str) -> ChatCompletion:
    choices = [
        ChatChoice(
            index=c.index,
            message=_message(c, primed),
            logprobs=ChoiceLogprobs(content=c.logprobs) if tr.want_lp else None,
            finish_reason=c.finish_reason,
        )
        for c in tr.choices
    ]
    return ChatCompletion(id=rid, created=created, model=model, choices=choices, usage=tr.usage())


def _completion_logprobs(tok: BPETokenizer, c: Choice, prompt: list[int], echo: bool) -> CompletionLogprobs:
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
    return CompletionLogprobs(tokens=tokens, token_logprobs=lps, top_logprobs=tops, text_offset=offsets)


def completion_choice(
    tok: BPETokenizer, idx: int, c: Choice, prompt: list[int], prompt_text: str, echo: bool, want_lp: bool
) -> CompletionChoice:
    gen_text = c.content()
    text = (prompt_text + gen_text) if echo else gen_text
    logprobs = _completion_logprobs(tok, c, prompt, echo) if want_lp else None
    return CompletionChoice(index=idx, text=text, logprobs=logprobs, finish_reason=c.finish_reason)


def now() -> int:
    return int(time.time())
