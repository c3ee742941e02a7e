"""POST /api/conversations/{id}/answer: the server answers a stored user message, streams it
in OpenAI's chunk framing and stores it as it streams; long histories are fitted to the context."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from test_serve_helpers import ScriptedBackend, live_server


@pytest.fixture(scope="module")
def live(tiny_tok, tmp_path_factory):
    with live_server(tiny_tok, tmp_path_factory.mktemp("db") / "a.db") as s:
        yield s


def new_chat(url: str, turns: list[tuple[str, str]], settings: dict | None = None) -> tuple[str, str]:
    """A conversation holding `turns` (role, content) in one branch; returns (its id, the last id)."""
    conv = httpx.post(url + "/api/conversations", json={"title": "t", "settings": settings}).json()
    parent = None
    for role, content in turns:
        m = httpx.post(
            f"{url}/api/conversations/{conv['id']}/messages",
            json={"role": role, "content": content, "parent_id": parent},
        )
        assert m.status_code == 200, m.text
        parent = m.json()["id"]
    return conv["id"], parent


def answer(url: str, conv_id: str, parent: str, **kw) -> list[dict]:
    body = {"parent_id": parent, **kw}
    with httpx.stream("POST", f"{url}/api/conversations/{conv_id}/answer", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        lines = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(x[6:]) for x in lines[:-1]]


def stored(url: str, conv_id: str) -> dict:
    return {m["id"]: m for m in httpx.get(f"{url}/api/conversations/{conv_id}").json()["messages"]}


def test_answer_is_streamed_and_stored_with_its_status(live) -> None:
    conv, user = new_chat(live.url, [("user", "Hello there")], {"system": "Be brief.", "max_tokens": 6})
    chunks = answer(live.url, conv, user, temperature=0)
    mid = chunks[0]["message_id"]
    assert all(c["message_id"] == mid and c["object"] == "chat.completion.chunk" for c in chunks)
    info = chunks[0]["chatsmith"]
    assert (info["trimmed_turns"], info["truncated"]) == (0, False) and info["prompt_tokens"] > 5
    assert "chatsmith" not in chunks[1]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    row = stored(live.url, conv)[mid]
    assert (row["role"], row["parent_id"], row["content"]) == ("assistant", user, text)
    assert row["status"] == ("length" if finishes[0] == "length" else "done")
    assert stored(live.url, conv)[user]["status"] == "done"
    # Retry: the same parent again is a new sibling, and it becomes the current leaf.
    again = answer(live.url, conv, user, temperature=0)[0]["message_id"]
    got = httpx.get(f"{live.url}/api/conversations/{conv}").json()
    assert again != mid and got["current_leaf"] == again
    assert [m["parent_id"] for m in got["messages"] if m["role"] == "assistant"] == [user, user]


def test_long_history_is_trimmed_and_a_long_message_truncated(live) -> None:
    long = "The quick brown fox jumps over the lazy dog. " * 445  # ~20,000 characters
    conv, user = new_chat(live.url, [("user", long), ("assistant", "ok"), ("user", "And now?")])
    first = answer(live.url, conv, user, max_tokens=4)[0]["chatsmith"]
    assert first["trimmed_turns"] == 2 and first["truncated"] is False
    conv2, user2 = new_chat(live.url, [("user", "hi"), ("assistant", "hello"), ("user", long + " Why?")])
    first = answer(live.url, conv2, user2, max_tokens=4)[0]["chatsmith"]
    assert first["trimmed_turns"] == 2 and first["truncated"] is True
    assert first["prompt_tokens"] <= 512 - 4


def test_answer_errors_are_openai_shaped(live) -> None:
    conv, user = new_chat(live.url, [("user", "hi"), ("assistant", "hello")])
    url = f"{live.url}/api/conversations/{conv}/answer"
    r = httpx.post(url, json={"parent_id": user})  # an assistant message
    assert r.status_code == 400 and r.json()["error"]["param"] == "parent_id"
    assert httpx.post(url, json={"parent_id": "nope"}).status_code == 400
    r = httpx.post(url, json={"parent_id": user, "temperature": 9})
    assert r.json()["error"]["param"] == "temperature"
    r = httpx.post(f"{live.url}/api/conversations/nope/answer", json={"parent_id": user})
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"


def test_stopped_and_empty_answers_are_stored(tiny_tok, tmp_path) -> None:
    backend = ScriptedBackend(tiny_tok, lambda p, _n: "" if "empty" in p else "x" * 400, delay=0.02)
    with live_server(tiny_tok, tmp_path / "s.db", backend=backend) as s:
        conv, user = new_chat(s.url, [("user", "say nothing: empty")])
        chunks = answer(s.url, conv, user)
        row = stored(s.url, conv)[chunks[0]["message_id"]]
        assert (row["content"], row["status"]) == ("", "done")
        conv, user = new_chat(s.url, [("user", "talk")])
        seen = ""
        body = {"parent_id": user}
        with httpx.stream("POST", f"{s.url}/api/conversations/{conv}/answer", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    c = json.loads(line[6:])
                    seen += c["choices"][0]["delta"].get("content") or ""
                if len(seen) >= 40:
                    break
        deadline = time.time() + 10
        while time.time() < deadline and backend.cancelled == 0:
            time.sleep(0.05)
        time.sleep(0.3)
        row = stored(s.url, conv)[c["message_id"]]
        assert row["status"] == "stopped" and row["content"].startswith(seen) and len(row["content"]) < 400
