"""Bad input gets the right 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve_helpers import CONTEXT, MODEL, ScriptedBackend, live_server

from chatsmith.serve.auth import create_key

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def live(tiny_tok, tmp_path_factory):
    with live_server(tiny_tok, tmp_path_factory.mktemp("db") / "e.db", max_body_bytes=1024 * 1024) as s:
        yield s


def post(live, body, path="/v1/chat/completions", headers=None) -> httpx.Response:
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    h = {"content-type": "application/json", **(headers or {})}
    return httpx.post(live.url + path, content=body, headers=h, timeout=60)


def assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] and param in err["param"]
    return err


def test_malformed_json(live) -> None:
    assert_error(post(live, b'{"model": "tiny", "messages": ['), 400)
    assert_error(post(live, b"[1, 2]"), 400)
    assert_error(post(live, "\udcff".encode("utf-8", "surrogatepass")), 400)


@pytest.mark.parametrize(
    "patch,param",
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"n": 0}, "n"),
        ({"n": "two"}, "n"),
        ({"stop": 3}, "stop"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_tokens"),
        ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"stream_options": {"include_usage": "maybe"}}, "stream_options"),
    ],
)
def test_wrong_fields_name_the_field(live, patch, param) -> None:
    assert_error(post(live, {"model": MODEL, "messages": HELLO, **patch}), 400, param=param)


def test_unknown_model_is_404(live) -> None:
    assert_error(
        post(live, {"model": "gpt-9", "messages": HELLO}), 404, code="model_not_found", param="model"
    )
    assert_error(
        post(live, {"model": "gpt-9", "prompt": "x"}, "/v1/completions"), 404, code="model_not_found"
    )


def test_prompt_over_the_context_names_both_numbers(live) -> None:
    long = "The quick brown fox jumps over the lazy dog. " * 200
    err = assert_error(
        post(live, {"model": MODEL, "messages": [{"role": "user", "content": long}]}),
        400,
        code="context_length_exceeded",
    )
    assert str(CONTEXT) in err["message"]
    n = int(err["message"].split("prompt has ")[1].split()[0])
    assert n > CONTEXT
    assert_error(
        post(live, {"model": MODEL, "prompt": long}, "/v1/completions"), 400, code="context_length_exceeded"
    )


def test_body_too_large_is_413(live) -> None:
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (20 * 1024 * 1024)}]})
    assert_error(post(live, big), 413, code="request_too_large")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(21):
            yield b" " * (1024 * 1024)

    json_type = {"content-type": "application/json"}
    r = httpx.post(live.url + "/v1/chat/completions", content=chunks(), headers=json_type, timeout=60)
    assert_error(r, 413)


def test_odd_but_valid_values_are_served(live) -> None:
    for patch in ({"seed": -(2**80)}, {"seed": 2**70}, {"stop": []}, {"logit_bias": {"5": -100}}):
        r = post(live, {"model": MODEL, "messages": HELLO, "max_tokens": 2, **patch})
        assert r.status_code == 200, (patch, r.text)


def test_unknown_route_and_method(live) -> None:
    assert_error(httpx.get(live.url + "/v1/nothing"), 404)
    assert_error(httpx.get(live.url + "/v1/chat/completions"), 405)


def test_completions_bad_prompts(live) -> None:
    for prompt in ([], [10**7], "", [[1, 2], "x"]):
        r = post(live, {"model": MODEL, "prompt": prompt}, "/v1/completions")
        assert r.status_code == 400, (prompt, r.text)


def test_detokenize_bad_ids(live) -> None:
    assert_error(post(live, {"tokens": [-1]}, "/detokenize"), 400)
    assert_error(post(live, {"tokens": "abc"}, "/detokenize"), 400)


def test_keys_missing_revoked_and_rate_limited(tiny_tok, tmp_path) -> None:
    with live_server(tiny_tok, tmp_path / "k.db") as s:
        kid, key = create_key(s.store, "alice", rpm=2)
        time.sleep(1.1)  # the server re-checks whether keys exist once a second
        body = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
        assert_error(post(s, body), 401, code="missing_api_key")
        assert_error(
            post(s, body, headers={"Authorization": "Bearer sk-cs-nope"}), 401, code="invalid_api_key"
        )
        assert_error(post(s, body, headers={"Authorization": "Basic abc"}), 401)
        auth = {"Authorization": f"Bearer {key}"}
        assert post(s, body, headers=auth).status_code == 200
        assert post(s, body, headers=auth).status_code == 200
        r = post(s, body, headers=auth)
        assert_error(r, 429, code="rate_limit_exceeded")
        assert int(r.headers["Retry-After"]) >= 1
        s.store.revoke_key(kid)
        assert_error(post(s, body, headers=auth), 401, code="invalid_api_key")
        assert_error(httpx.get(s.url + "/v1/models"), 401)


def test_loading_server_is_503(tiny_tok, tmp_path) -> None:
    from chatsmith.serve.app import create_app
    from chatsmith.serve.backend import Backend
    from chatsmith.serve.server import build_context
    from chatsmith.serve.store import Store

    app = create_app(build_context(Backend("later"), Store(f"sqlite:///{tmp_path / 'l.db'}")))

    async def go() -> tuple[httpx.Response, httpx.Response]:
        t = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=t, base_url="http://x") as c:
            return await c.get("/health"), await c.post("/v1/chat/completions", json={"messages": HELLO})

    health, chat = asyncio.run(go())
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert_error(chat, 503, code="loading")
    assert "Retry-After" in chat.headers


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(
    [
        "messages",
        "model",
        "max_tokens",
        "n",
        "stop",
        "temperature",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "response_format",
        "seed",
        "prompt",
        "echo",
        "stream_options",
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.dictionaries(_fields, _json, max_size=5),
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
)
def test_fuzzed_bodies_never_500(live, body, path) -> None:
    body = {**body, "max_tokens": 2} if "max_tokens" not in body else body
    body.pop("stream", None)
    r = post(live, body, path)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_overloaded_engine_is_503_with_retry_after(tiny_tok, tmp_path) -> None:
    from chatsmith.engine.sequence import EngineFull

    class Full(ScriptedBackend):
        def submit(self, prompt, params, run_tools):
            raise EngineFull("256 requests are already waiting; try again shortly")

    with live_server(tiny_tok, tmp_path / "f.db", backend=Full(tiny_tok, str)) as s:
        r = post(s, {"messages": HELLO})
        assert_error(r, 503, code="overloaded")
        assert r.headers["Retry-After"] == "1"


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-6])
def test_a_temperature_below_float32_range_is_greedy(live, temperature) -> None:
    """Such a temperature became 0 in float32 and the sampler divided by it: NaN
    probabilities, a failed engine step and a 500. Below 1e-5 it means greedy, as in vLLM."""
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4}
    r = post(live, {**body, "temperature": temperature})
    assert r.status_code == 200, r.text
    greedy = post(live, {**body, "temperature": 0}).json()
    assert r.json()["choices"][0]["message"] == greedy["choices"][0]["message"]


@pytest.mark.parametrize("penalty", [1e-300, 1e-40, 0.001])
def test_a_vanishing_repetition_penalty_is_refused(live, penalty) -> None:
    """Dividing logits by 1e-40 overflows float32 (NaN probabilities, a 500): a 400 names it."""
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "temperature": 1}
    body["repetition_penalty"] = penalty
    assert_error(post(live, body), 400, param="repetition_penalty")
    assert post(live, {**body, "repetition_penalty": 0.5}).status_code == 200
