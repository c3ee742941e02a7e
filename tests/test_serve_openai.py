"""The official `openai` client against a live server on 127.0.0.1 (tiny random model)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from test_serve_helpers import CONTEXT, MODEL, ScriptedBackend, live_server

from chatsmith.engine.sequence import Event, Request


@pytest.fixture(scope="module")
def live(tiny_tok, tmp_path_factory):
    with live_server(tiny_tok, tmp_path_factory.mktemp("db") / "s.db") as s:
        yield s


@pytest.fixture(scope="module")
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


HELLO = [{"role": "user", "content": "Hello there"}]


def test_models_and_health(live, client) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    h = httpx.get(live.url + "/health").json()
    assert h["status"] == "ok"


def test_chat_completion_with_usage(client) -> None:
    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.id.startswith("chatcmpl-") and r.model == MODEL


def test_streaming_matches_non_streaming(client) -> None:
    kw = dict(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content or ""
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


def test_n2_seed_and_stop(client) -> None:
    kw = dict(model=MODEL, messages=HELLO, max_tokens=10, temperature=1.0, seed=7, n=2)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    # A stop string cuts the text before it: take a piece of a greedy answer as the stop.
    greedy = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, temperature=0)
    text = greedy.choices[0].message.content
    assert len(text) >= 4
    stop = text[2:4]
    cut = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_logprobs(client) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    for e in lp:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert e.logprob == pytest.approx(max(t.logprob for t in e.top_logprobs), abs=1e-4)


def test_tool_call_round_trip(client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(
        model=MODEL,
        messages=msgs,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=12,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert isinstance(call.function.arguments, str)
    # Streaming reports the same call in a tool_calls delta.
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=msgs,
            tools=tools,
            stream=True,
            max_tokens=12,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    # The client runs the tool and sends the result back; the model answers.
    msgs += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})},
    ]
    r2 = client.chat.completions.create(model=MODEL, messages=msgs, tools=tools, max_tokens=5)
    assert r2.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens


def test_completions_echo_scores_every_prompt_token(live, client, tiny_tok) -> None:
    prompt = "The quick brown fox jumps over the lazy dog."
    n = len(tiny_tok.encode(prompt))
    r = client.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=1, max_tokens=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == prompt
    assert len(lp.tokens) == n and lp.token_logprobs[0] is None
    assert all(isinstance(x, float) and x <= 0 for x in lp.token_logprobs[1:])
    # The same logprobs as the engine's own forward pass over the prompt: check with /tokenize.
    ids = httpx.post(live.url + "/tokenize", json={"prompt": prompt}).json()["tokens"]
    assert len(ids) == n
    batch = client.completions.create(model=MODEL, prompt=[prompt, "Hello"], max_tokens=3, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]


def test_tokenize_detokenize(live) -> None:
    t = httpx.post(live.url + "/tokenize", json={"prompt": "我是一个助手"}).json()
    assert t["max_model_len"] == CONTEXT
    d = httpx.post(live.url + "/detokenize", json={"tokens": t["tokens"]}).json()
    assert d["prompt"] == "我是一个助手"
    m = httpx.post(live.url + "/tokenize", json={"messages": HELLO}).json()
    assert m["count"] > t["count"] - 20


def test_metrics_count_tokens(live, client) -> None:
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
    text = httpx.get(live.url + "/metrics").text
    for name in (
        "chatsmith_time_to_first_token_seconds_count",
        "chatsmith_inter_token_latency_seconds_count",
        "chatsmith_e2e_request_latency_seconds_count",
        "chatsmith_num_requests_running",
        "chatsmith_num_requests_waiting",
        "chatsmith_prompt_tokens_total",
        "chatsmith_generation_tokens_total",
    ):
        assert name in text
    gen = [ln for ln in text.splitlines() if ln.startswith("chatsmith_generation_tokens_total")]
    assert float(gen[0].split()[-1]) >= 3


def test_json_mode_and_max_completion_tokens(client) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_completion_tokens=4, response_format={"type": "json_object"}
    )
    assert r.choices[0].message.content.startswith("{")  # the answer is primed as a JSON object
    assert r.usage.completion_tokens <= 4


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_generation(tiny_tok, tmp_path, stream) -> None:
    backend = ScriptedBackend(tiny_tok, lambda _p, _n: "x" * 1600)  # 16 s unless cancelled
    with live_server(tiny_tok, tmp_path / "d.db", backend=backend) as s:
        body = {"model": "scripted", "messages": HELLO, "stream": stream}
        if stream:
            with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=30) as r:
                for i, _ in enumerate(r.iter_lines()):
                    if i > 6:
                        break
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(s.url + "/v1/chat/completions", json=body, timeout=0.5)
        deadline = time.time() + 8
        while not backend.finished and time.time() < deadline:
            time.sleep(0.05)
        assert backend.cancelled == 1


class ToolCallingBackend(ScriptedBackend):
    """Answers as the engine does when the model calls a client tool: the turn ends with it."""

    def submit(self, prompt, params, run_tools):
        assert not run_tools  # client tools: the engine must hand every call back
        req = Request(prompt, params, run_tools)
        call = {"name": "get_weather", "arguments": {"city": "Paris"}}
        req.push(Event("token", 0, token=1, text="Let me check."))
        req.push(Event("tool_call", 0, data=call))
        data = {"finish_reason": "tool_calls", "prompt_tokens": len(prompt), "completion_tokens": 9}
        req.push(Event("done", 0, data={**data, "tool_calls": [call]}))
        return req


def test_model_initiated_tool_call(tiny_tok, tmp_path) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with live_server(tiny_tok, tmp_path / "t.db", backend=ToolCallingBackend(tiny_tok, str)) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(model="scripted", messages=HELLO, tools=tools)
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and msg.content == "Let me check."
        assert msg.tool_calls[0].function.name == "get_weather"
        assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
        chunks = list(c.chat.completions.create(model="scripted", messages=HELLO, tools=tools, stream=True))
        calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices]
        assert [(tc.index, tc.function.name) for tc in calls] == [(0, "get_weather")]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_streaming_n2_matches_non_streaming(client) -> None:
    kw = dict(model=MODEL, messages=HELLO, max_tokens=8, temperature=1.0, seed=3, n=2)
    full = [c.message.content for c in client.chat.completions.create(**kw).choices]
    texts, finished = ["", ""], set()
    for ch in client.chat.completions.create(**kw, stream=True):
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.add(c.index)
    assert texts == full and finished == {0, 1}


def test_wire_json_keeps_openai_nulls_and_omissions(live) -> None:
    """Clients rely on which keys are null and which are absent: pin them on the raw JSON."""
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 3, "temperature": 0}
    r = httpx.post(live.url + "/v1/chat/completions", json=body).json()
    assert list(r) == ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"]
    assert r["system_fingerprint"] is None and r["choices"][0]["logprobs"] is None
    assert list(r["choices"][0]["message"]) == ["role", "content"]  # no tool_calls key without calls
    with httpx.stream("POST", live.url + "/v1/chat/completions", json={**body, "stream": True}) as s:
        events = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c and c["system_fingerprint"] is None for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"]
    plain = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
    c = httpx.post(live.url + "/v1/completions", json=plain).json()
    assert list(c) == ["id", "object", "created", "model", "choices", "usage"]
    assert list(c["choices"][0]) == ["index", "text", "logprobs", "finish_reason"]
    err = httpx.post(live.url + "/v1/chat/completions", json={"model": "nope", "messages": HELLO}).json()
    assert list(err["error"]) == ["message", "type", "param", "code"]
    spec = httpx.get(live.url + "/openapi.json").json()
    ok = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
