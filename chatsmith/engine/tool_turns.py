"""Tool turns: the Hermes calls an assistant turn makes, and the tools the engine runs itself.

A call is parsed when its `</tool_call>` closes (`TurnText` hands over its body). When
the turn ends, its calls are recorded on the sequence. If every call names a built-in
tool, the request lets the engine run them, the turn ended on `<|im_end|>` and rounds are
left, the engine runs them and feeds their results back in a tool turn, and the model
goes on; otherwise the sequence finishes, with "tool_calls" when it called a client's tool.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

from chatsmith.engine.sequence import Seq
from chatsmith.engine.tools import TOOLS, run_tool
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import tool_results_ids

MAX_TOOL_ROUNDS = 4

Call: TypeAlias = tuple[str, Any] | str  # (name, arguments), or an error string


def parse_tool_call(text: str) -> tuple[str, Any] | str:
    """The (name, arguments) in a Hermes tool-call body, or an error string."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as e:
        return f"error: malformed tool call JSON ({e.msg})"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return "error: a tool call needs a name"
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return "error: tool call arguments are not JSON"
    return obj["name"], args


def note_call(s: Seq, body: str) -> dict[str, Any]:
    """Parse the body of a call s just closed and keep it for the end of the turn; returns
    the data of its `tool_call` event."""
    parsed = parse_tool_call(body)
    s.calls.append(parsed)
    return {"error": parsed} if isinstance(parsed, str) else dict(zip(("name", "arguments"), parsed))


def close_turn(s: Seq) -> list[Call]:
    """The calls of the turn s just ended, now recorded as its tool calls or tool errors."""
    calls, s.calls = s.calls, []
    for c in calls:
        if isinstance(c, str):
            s.tool_errors.append(c)
        else:
            s.tool_calls.append({"name": c[0], "arguments": c[1]})
    return calls


def run_builtin(s: Seq, calls: list[Call], on_im_end: bool) -> list[str] | None:
    """The results of calls, run here, where the engine answers them itself (all built-in,
    allowed by the request, the turn closed by `<|im_end|>`, rounds left); else None."""
    builtin = all(isinstance(c, str) or c[0] in TOOLS for c in calls)
    if not (calls and builtin and s.req.run_tools and on_im_end and s.rounds < MAX_TOOL_ROUNDS):
        return None
    s.rounds += 1
    results = [c if isinstance(c, str) else run_tool(c[0], c[1]) for c in calls]
    s.tool_results.extend(results)
    return results


def finish_reason(calls: list[Call]) -> str:
    """Why a turn the engine does not continue ends: "tool_calls" when it called a tool
    the client runs, else "stop"."""
    return "tool_calls" if any(not isinstance(c, str) for c in calls) else "stop"


def feed_ids(tok: BPETokenizer, t: int, results: list[str]) -> list[int]:
    """What goes into the cache before the model goes on: the token that ended the turn
    (not fed yet), then the results in a tool turn and the next assistant header."""
    return [t, *tool_results_ids(tok, results)]
