"""OpenAI JSON -> a prompt and sampling parameters; the one place requests become engine work.

Conversations become ids only through the chat format (`encode_prompt`); client tool
definitions go into the system turn as Qwen's template writes them. A forced tool
choice primes the assistant turn with the opening of the call, so even a weak model
answers with that function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.serve.backend import Backend, SamplingParams
from chatsmith.serve.errors import APIError, bad_request
from chatsmith.serve.protocol import ChatRequest, CompletionRequest, _Sampling
from chatsmith.tokenizer.chat_format import encode_prompt, validate, with_tools
from chatsmith.tokenizer.special import TOOL_CALL


@dataclass
class Prepared:
    prompt: list[int]
    params: SamplingParams
    run_tools: bool = True
    primed: str = ""  # text already written into the assistant turn (part of the answer)
    forced_tool: str | None = None  # "" = any tool (tool_choice "required"), a name = that one
    prompt_text: str = ""


def check_model(backend: Backend, model: str | None) -> None:
    if model and model != backend.name:
        raise APIError(
            404,
            f"The model `{model}` does not exist; this server serves `{backend.name}` (GET /v1/models)",
            param="model",
            code="model_not_found",
        )


def too_long(prompt_tokens: int, limit: int) -> APIError:
    return bad_request(
        f"This model's maximum context length is {limit} tokens. However, your prompt has "
        f"{prompt_tokens} tokens (plus at least 1 to generate). Shorten the messages or the prompt.",
        param="messages",
        code="context_length_exceeded",
    )


def _text_content(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for p in content:
        if p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise bad_request(
                f"messages[{i}].content: only text parts are supported, got type {p.get('type')!r}",
                param=f"messages.{i}.content",
            )
        parts.append(p["text"])
    return "".join(parts)


def _tool_calls_in(calls: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
    out = []
    for j, tc in enumerate(calls):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request(
                f"messages[{i}].tool_calls[{j}] needs function.name", param=f"messages.{i}.tool_calls"
            )
        args = fn.get("arguments", "{}")
        if not isinstance(args, (str, dict)):
            raise bad_request(
                f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON string",
                param=f"messages.{i}.tool_calls",
            )
        out.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def conversation(req: ChatRequest) -> list[dict[str, Any]]:
    """OpenAI messages -> the chat format's conversation (with client tools in the system turn)."""
    msgs: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
        d["content"] = _text_content(m.content, i)
        if m.tool_calls:
            if m.role != "assistant":
                raise bad_request(f"messages[{i}]: only assistant messages carry tool_calls")
            d["tool_calls"] = _tool_calls_in(m.tool_calls, i)
        msgs.append(d)
    tools = None
    if req.tools and req.tool_choice != "none":
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
    try:
        return validate(with_tools(msgs, tools))
    except ChatsmithError as e:
        raise bad_request(str(e), param="messages") from None


def _forced_tool(req: ChatRequest) -> str | None:
    choice = req.tool_choice
    if choice in (None, "auto", "none"):
        return None
    names = [t.function.name for t in req.tools or []]
    if not names:
        raise bad_request("tool_choice needs `tools`", param="tool_choice")
    if choice == "required":
        return ""
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if name not in names:
            raise bad_request(f"tool_choice names {name!r}, which is not in `tools`", param="tool_choice")
        return name
    raise bad_request("tool_choice must be 'none', 'auto', 'required' or a function", param="tool_choice")


def _temperature(t: float | None) -> float:
    # Below vLLM's _SAMPLING_EPS a temperature means greedy; far below, it is 0 in float32
    # and the sampler would divide by it.
    return 1.0 if t is None else 0.0 if t < 1e-5 else t


def sampling(
    req: _Sampling, backend: Backend, prompt_len: int, limit: int | None, **extra: Any
) -> SamplingParams:
    ctx = backend.context_length
    if prompt_len + (1 if limit != 0 else 0) > ctx:
        raise too_long(prompt_len, ctx)
    if limit is not None and limit > ctx:
        raise bad_request(
            f"max_tokens is {limit}, more than this model's whole context ({ctx} tokens)",
            param="max_tokens",
            code="context_length_exceeded",
        )
    room = ctx - prompt_len
    try:
        bias = {int(k): float(v) for k, v in (req.logit_bias or {}).items()}
    except ValueError:
        raise bad_request("logit_bias keys must be token ids", param="logit_bias") from None
    p = SamplingParams(
        temperature=_temperature(req.temperature),
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(0, req.top_k or 0),
        min_p=req.min_p or 0.0,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        logit_bias=bias,
        seed=None if req.seed is None else req.seed % (2**63 - 64),  # any int is a valid OpenAI seed
        stop=req.stop_list(),
        n=req.n,
        # A request for more than fits is served up to the end of the context (llama.cpp does the same).
        max_new_tokens=room if limit is None else min(limit, room),
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        **extra,
    )
    p.min_tokens = min(p.min_tokens, p.max_new_tokens)
    try:
        return p.validate(backend.tok.vocab_size if backend.tok else None)
    except ChatsmithError as e:
        raise bad_request(str(e)) from None


def prepare_chat(req: ChatRequest, backend: Backend) -> Prepared:
    check_model(backend, req.model)
    tok = backend.tok
    assert tok is not None
    msgs = conversation(req)
    forced = _forced_tool(req)
    primed = ""
    if forced is not None:
        primed = (
            f'{TOOL_CALL}\n{{"name": "{forced}", "arguments": ' if forced else f'{TOOL_CALL}\n{{"name": "'
        )
    elif req.response_format is not None and req.response_format.type != "text":
        primed = "{"  # a JSON object starts here; the model continues it
    try:
        prompt = encode_prompt(tok, msgs) + (tok.encode(primed) if primed else [])
    except ChatsmithError as e:
        raise bad_request(str(e), param="messages") from None
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if limit == 0:
        raise bad_request("max_tokens must be at least 1", param="max_tokens")
    params = sampling(
        req,
        backend,
        len(prompt),
        limit,
        logprobs=req.logprobs,
        top_logprobs=(req.top_logprobs or 0) if req.logprobs else 0,
    )
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs=true", param="top_logprobs")
    return Prepared(
        prompt,
        params,
        run_tools=not req.tools,
        primed="" if forced is not None else primed,
        forced_tool=forced,
    )


def prepare_completions(req: CompletionRequest, backend: Backend) -> list[Prepared]:
    check_model(backend, req.model)
    tok = backend.tok
    assert tok is not None
    p = req.prompt
    if isinstance(p, str):
        prompts = [p]
    elif p and all(isinstance(x, int) for x in p):
        prompts = [list(p)]  # one prompt of token ids
    else:
        prompts = list(p)
    if not prompts or len(prompts) > 64:
        raise bad_request("prompt must hold 1 to 64 prompts", param="prompt")
    out = []
    for x in prompts:
        if isinstance(x, str):
            ids, text = tok.encode(x), x
        else:
            if any(not 0 <= t < tok.vocab_size for t in x):
                raise bad_request(f"prompt token ids must be in [0, {tok.vocab_size})", param="prompt")
            ids, text = list(x), tok.decode(list(x))
        if not ids:
            raise bad_request("prompt is empty", param="prompt")
        limit = 16 if req.max_tokens is None else req.max_tokens
        want_lp = req.logprobs is not None
        params = sampling(
            req,
            backend,
            len(ids),
            limit,
            logprobs=want_lp,
            top_logprobs=req.logprobs or 0,
            prompt_logprobs=(req.echo and want_lp) or limit == 0,
        )
        out.append(Prepared(ids, params, run_tools=False, prompt_text=text))
    return out


def parse_forced(forced: str, text: str) -> tuple[str, str]:
    """(name, arguments JSON) of a tool call whose opening the server primed."""
    head = f'{{"name": "{forced}", "arguments": ' if forced else '{"name": "'
    body = text.strip()
    for end in range(len(body), 0, -1):  # the longest prefix that closes the object
        if body[end - 1] != "}":
            continue
        try:
            obj = json.loads(head + body[:end])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("arguments", {})
            return obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    # The model did not close the call: report what it wrote, as OpenAI does with invalid JSON.
    if forced:
        return forced, body[:-1] if body.endswith("}") else body
    name, _, rest = body.partition('"')
    return name, rest
