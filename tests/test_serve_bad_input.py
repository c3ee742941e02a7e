"""Bad input gets a 400 naming the field, never a 500: lone surrogates anywhere, odd tool
choices, deep nesting, malformed tool schemas; a bad row already stored breaks no GET."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import text
from test_serve_helpers import ScriptedBackend

from chatsmith.serve.app import create_app
from chatsmith.serve.server import build_context
from chatsmith.serve.store import Store

LONE = '"a\\ud800b"'  # a lone surrogate, as JSON writes it


@pytest.fixture
def api(tiny_tok, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    app = create_app(build_context(ScriptedBackend(tiny_tok, lambda _p, _n: "ok", delay=0), store))

    def call(method: str, path: str, raw: str | None = None, **kw) -> httpx.Response:
        if raw is not None:
            kw = {"content": raw.encode(), "headers": {"content-type": "application/json"}}

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())

    call.store = store
    yield call
    store.close()


def bad(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"], err


def test_lone_surrogates_are_400_naming_the_field(api) -> None:
    def send(method: str, path: str, body: str, param: str) -> None:
        bad(api(method, path, raw=body.replace("LONE", LONE)), param)

    user = '{"role": "user", "content": LONE}'
    send("POST", "/v1/chat/completions", '{"messages": [' + user + "]}", "messages.0.content")
    send("POST", "/v1/completions", '{"prompt": LONE}', "prompt")
    send("POST", "/tokenize", '{"prompt": LONE}', "prompt")
    send("POST", "/tokenize", '{"messages": [' + user + "]}", "messages.0.content")
    send("POST", "/api/conversations", '{"title": "x", "settings": {"system": LONE}}', "settings.system")
    conv = api("POST", "/api/conversations", json={"title": "t"}).json()["id"]
    base = f"/api/conversations/{conv}"
    send("PATCH", base, '{"settings": {"k": [LONE]}}', "settings.k.0")
    send("PATCH", base, '{"title": LONE}', "title")
    send("POST", base + "/messages", user, "content")
    call = '{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": LONE}}]}'
    send("POST", base + "/messages", call, "tool_calls.0.function.arguments")


def test_stored_bad_rows_do_not_break_reading(api) -> None:
    conv = api("POST", "/api/conversations", json={"title": "t"}).json()["id"]
    api("POST", f"/api/conversations/{conv}/messages", json={"role": "assistant", "content": "x"})
    with api.store.engine.begin() as c:  # rows written before input was checked
        c.execute(text("UPDATE conversations SET settings = :s"), {"s": '{"system": "\\ud800"}'})
        c.execute(text("UPDATE messages SET tool_calls = :t"), {"t": '[{"function": {"name": "\\udfff"}}]'})
    r = api("GET", "/api/conversations")
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    got = api("GET", f"/api/conversations/{conv}")
    assert got.status_code == 200, got.text
    json.dumps(got.json(), ensure_ascii=False).encode("utf-8")  # valid UTF-8 all through


def test_odd_shapes_are_400(api) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = api("POST", "/v1/chat/completions", json={"messages": msgs, "tools": tools,
                                                   "tool_choice": {"type": "function", "function": "f"}})
    bad(r, "tool_choice")
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = api("POST", "/v1/chat/completions", raw=deep)
    assert r.status_code in (400, 413) and r.json()["error"]["message"]
    for schema in ({"type": "nonsense"}, {"type": "object", "properties": 5}, {"required": "x"}):
        t = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        r = api("POST", "/v1/chat/completions", json={"messages": msgs, "tools": t})
        bad(r, "tools.0.function.parameters")
    ok = api("POST", "/v1/chat/completions", json={"messages": msgs, "tools": tools})
    assert ok.status_code == 200, ok.text


def test_tokenize_of_no_messages_is_400(api) -> None:
    """`messages: []` passed the tokenize model but not the chat one it is rebuilt into: a 500."""
    bad(api("POST", "/tokenize", json={"messages": []}), "messages")
    assert api("POST", "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
