"""The chat format: the one module that turns conversations into token ids and a loss mask.

ChatML as Qwen uses it, with Hermes tool calls (what vLLM's `hermes` parser reads):

    <|im_start|>system\\n{text}<|im_end|>\\n
    <|im_start|>user\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n{text}\\n{call}\\n{call}<|im_end|>\\n      (with tool calls; text optional)
    <|im_start|>user\\n<tool_response>\\n{result}\\n</tool_response><|im_end|>\\n

where {call} is `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, and
consecutive tool results share one user turn, each in its own `<tool_response>` block.

A conversation is rendered to one string and encoded in one call, exactly as Hugging
Face's `apply_chat_template` + encode would; the loss mask comes from character spans.
Trained: assistant text, its tool calls and the `<|im_end|>` that closes its turn.
Not trained: system, user and tool turns, the `<|im_start|>assistant\\n` header, and
the newline between turns.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.model_template import CHATML, TemplateStyle, find_style, render_template
from chatsmith.tokenizer.special import (
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TOOL_CALL,
    TOOL_CALL_END,
    TOOL_RESPONSE,
    TOOL_RESPONSE_END,
)

ROLES = ("system", "user", "assistant", "tool")
_SPECIAL = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

# The same format as a Jinja template, for `tokenizer_config.json` on export. It must
# render byte for byte what `render` below renders (a test checks it), including a
# missing or null `content` (rendered as "") and a tool call without `arguments` ({}).
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- (messages[0].content or '') + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message.role == 'system' %}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- if message.tool_calls %}{%- for tc in message.tool_calls %}"
    "{%- if tc.function is defined %}{%- set tc = tc.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + tc.name + \'", "arguments": \' }}'
    "{%- if tc.arguments is string %}{{- tc.arguments }}"
    "{%- elif tc.arguments is defined %}{{- tc.arguments | tojson }}{%- else %}{{- '{}' }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{%- endif %}"
    "{%- if not message.content and not message.tool_calls %}{{- '\\n' }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

GENERATION_PROMPT = f"{IM_START}assistant\n"


TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)


def with_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The conversation with client tool definitions (OpenAI's `tools`) in its system turn,
    worded as Qwen3's template does, so `render` equals CHAT_TEMPLATE rendered with `tools`."""
    if not tools:
        return messages
    listed = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    rest = messages
    head = ""
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        head, rest = (messages[0].get("content") or "") + "\n\n", messages[1:]
    return [{"role": "system", "content": head + TOOLS_HEADER + listed + TOOLS_FOOTER}, *rest]


def tool_call_text(name: str, arguments: dict[str, Any] | str) -> str:
    """The Hermes tool-call block (without the newline that precedes it)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'{TOOL_CALL}\n{{"name": "{name}", "arguments": {args}}}\n{TOOL_CALL_END}'


def _tool_calls(msg: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function", tc) if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ChatsmithError(f"a tool call needs a name: {tc!r}")
        out.append((fn["name"], fn.get("arguments", {})))
    return out


def validate(messages: Any) -> list[dict[str, Any]]:
    """Check the shape of a conversation; the message says what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ChatsmithError("a conversation is a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ChatsmithError(f"message {i} has no role")
        if m["role"] not in ROLES:
            raise ChatsmithError(f"message {i} has unknown role {m['role']!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(m.get("content", ""), (str, type(None))):
            raise ChatsmithError(f"message {i}: content must be a string")
    return messages


def render(
    messages: list[dict[str, Any]], add_generation_prompt: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the character spans that are trained."""
    text, spans, _ = render_with_controls(messages, add_generation_prompt)
    return text, spans


def render_with_controls(
    messages: list[dict[str, Any]], add_generation_prompt: bool = False
) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """`render`, plus the spans of the special tokens the format itself writes. Only those are
    control tokens: the same strings typed in content (or tool calls) are text."""
    validate(messages)
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    controls: list[tuple[int, int]] = []
    n = 0

    def emit(s: str, trained: bool = False, ctl: bool = False) -> None:
        nonlocal n
        if trained and s:
            if spans and spans[-1][1] == n:  # one span for a run of trained pieces
                spans[-1] = (spans[-1][0], n + len(s))
            else:
                spans.append((n, n + len(s)))
        if ctl:
            controls.extend((n + m.start(), n + m.end()) for m in _SPECIAL.finditer(s))
        parts.append(s)
        n += len(s)

    for i, m in enumerate(messages):
        role, content = m["role"], m.get("content") or ""
        if role == "assistant":
            emit(f"{IM_START}assistant", ctl=True)
            calls = _tool_calls(m)
            # The "\n" after the header is part of the prompt the engine primes with, so
            # the trained span starts after it.
            emit("\n")
            emit(content, trained=True)
            for k, (name, args) in enumerate(calls):
                args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                emit("\n" if content or k else "", trained=True)
                emit(f'{TOOL_CALL}\n{{"name": "', trained=True, ctl=True)
                emit(name, trained=True)
                emit('", "arguments": ', trained=True)
                emit(args, trained=True)
                emit(f"}}\n{TOOL_CALL_END}", trained=True, ctl=True)
            emit(IM_END, trained=True, ctl=True)
            emit("\n")
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                emit(f"{IM_START}user", ctl=True)
            emit(f"\n{TOOL_RESPONSE}\n", ctl=True)
            emit(content)
            emit(f"\n{TOOL_RESPONSE_END}", ctl=True)
            if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                emit(f"{IM_END}\n", ctl=True)
        else:
            emit(f"{IM_START}{role}\n", ctl=True)
            _emit_content(emit, content, tools_block=role == "system" and i == 0)
            emit(f"{IM_END}\n", ctl=True)
    if add_generation_prompt:
        emit(GENERATION_PROMPT, ctl=True)
    return "".join(parts), spans, controls


def _emit_content(emit: Any, content: str, tools_block: bool) -> None:
    """Content as text; in the first system turn, the tool block `with_tools` wrote keeps its
    header and footer as the template's own words (control tokens), the tool list as text."""
    at = content.find(TOOLS_HEADER) if tools_block and content.endswith(TOOLS_FOOTER) else -1
    if at < 0:
        emit(content)
        return
    emit(content[:at])
    emit(TOOLS_HEADER, ctl=True)
    emit(content[at + len(TOOLS_HEADER) : len(content) - len(TOOLS_FOOTER)])
    emit(TOOLS_FOOTER, ctl=True)


def style(tok: BPETokenizer) -> TemplateStyle:
    """How this tokenizer's model renders conversations (found once per tokenizer)."""
    cached = tok.__dict__.get("_template_style")
    if cached is None:
        config = getattr(tok, "config", None)
        cached = find_style(config, lambda m, g: render(m, g)[0]) if config else CHATML
        tok.__dict__["_template_style"] = cached
    return cached


def with_default_system(tok: BPETokenizer, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with the model's default system turn where its template adds one."""
    system = style(tok).default_system
    if system is None or (messages and isinstance(messages[0], dict) and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def encode_conversation(tok: BPETokenizer, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """ids and a 0/1 mask of the same length: 1 where the token is trained."""
    if not style(tok).chatml:
        raise ChatsmithError("this model's chat template is not ChatML: chatsmith cannot train on it")
    # Special tokens typed in content are text here too, so a prompt encodes as the start of
    # its conversation and training never teaches a control id from content.
    text, spans, controls = render_with_controls(with_default_system(tok, messages))
    ids, offsets = tok.encode_with_controls_offsets(text, controls)
    mask = [0] * len(ids)
    j = 0
    for t, (start, _end) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and spans[j][0] <= start < spans[j][1]:
            mask[t] = 1
    return ids, mask


def encode_prompt(tok: BPETokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """ids of the conversation so far plus the header that opens an assistant turn; special
    tokens typed in content are encoded as text, so no message can forge a turn."""
    st = style(tok)
    if not st.chatml and st.template is not None:  # the model's own template renders it
        return tok.encode(render_template(st.template, tok.config or {}, validate(messages), True))
    msgs = with_default_system(tok, messages)
    text, _, controls = render_with_controls(msgs, add_generation_prompt=True)
    return tok.encode_with_controls(text, controls)


def tool_response_ids(tok: BPETokenizer, result: str) -> list[int]:
    """What the engine appends after a tool call ends a turn: the tool's answer in a
    user turn, then the header of the next assistant turn (same bytes as `render`)."""
    return tok.encode(
        f"\n{IM_START}user\n{TOOL_RESPONSE}\n{result}\n{TOOL_RESPONSE_END}{IM_END}\n{GENERATION_PROMPT}"
    )


def tool_results_ids(tok: BPETokenizer, results: list[str]) -> list[int]:
    """`tool_response_ids` for the results of every call of one turn: they share one user
    turn, each in its own block, as consecutive tool messages render."""
    return tool_response_ids(tok, f"\n{TOOL_RESPONSE_END}\n{TOOL_RESPONSE}\n".join(results))
