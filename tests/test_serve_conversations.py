"""The conversation API the web app uses: list, search, rename, branch, switch, delete, export/import."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chatsmith.serve.app import create_app
from chatsmith.serve.auth import create_key
from chatsmith.serve.backend import Backend
from chatsmith.serve.server import build_context
from chatsmith.serve.store import Store


@pytest.fixture
def api(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    app = create_app(build_context(Backend("unloaded"), store))

    def call(method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
        async def go() -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await c.request(method, path, headers=headers, **kw)

        return asyncio.run(go())

    call.store = store
    return call


def test_tree_branch_switch_and_search(api) -> None:
    c = api("POST", "/api/conversations", json={"title": "New chat"}).json()
    base = f"/api/conversations/{c['id']}"
    u1 = api("POST", base + "/messages", json={"role": "user", "content": "你好"}).json()
    a1 = api(
        "POST", base + "/messages", json={"role": "assistant", "content": "Hi!", "parent_id": u1["id"]}
    ).json()
    u2 = api(
        "POST", base + "/messages", json={"role": "user", "content": "edited hello"}
    ).json()  # a sibling of u1
    conv = api("GET", base).json()
    assert conv["current_leaf"] == u2["id"] and len(conv["messages"]) == 3
    assert api("PATCH", base, json={"current_leaf": a1["id"], "title": "Greetings"}).status_code == 200
    conv = api("GET", base).json()
    assert (conv["current_leaf"], conv["title"]) == (a1["id"], "Greetings")
    assert [x["id"] for x in api("GET", "/api/conversations", params={"q": "你好"}).json()["data"]] == [
        c["id"]
    ]
    assert api("GET", "/api/conversations", params={"q": "absent"}).json()["data"] == []
    assert api("PATCH", base, json={"current_leaf": "nope"}).status_code == 400
    bad = api("POST", base + "/messages", json={"role": "robot", "content": "x"})
    assert bad.status_code == 400 and "role" in bad.json()["error"]["message"]


def test_export_import_round_trip(api) -> None:
    c = api(
        "POST", "/api/conversations", json={"title": "Export me", "settings": {"temperature": 0.3}}
    ).json()
    base = f"/api/conversations/{c['id']}"
    u = api("POST", base + "/messages", json={"role": "user", "content": "2+2?"}).json()
    api("POST", base + "/messages", json={"role": "assistant", "content": "4", "parent_id": u["id"]})
    exported = api("GET", base).json()
    imported = api("POST", "/api/conversations/import", json=exported).json()
    assert imported["id"] != c["id"] and imported["title"] == "Export me"
    assert [(m["role"], m["content"]) for m in imported["messages"]] == [("user", "2+2?"), ("assistant", "4")]
    assert imported["messages"][1]["parent_id"] == imported["messages"][0]["id"]
    assert imported["current_leaf"] == imported["messages"][1]["id"]
    assert imported["settings"] == {"temperature": 0.3}
    broken = {"title": "x", "messages": [{"id": "a", "role": "user", "content": "x", "parent_id": "zzz"}]}
    assert api("POST", "/api/conversations/import", json=broken).status_code == 400
    assert len(api("GET", "/api/conversations").json()["data"]) == 2  # the failed import left nothing
    assert api("DELETE", base).status_code == 200
    assert api("GET", base).status_code == 404


def test_users_see_only_their_conversations(api) -> None:
    _, ka = create_key(api.store, "alice")
    _, kb = create_key(api.store, "bob")
    c = api("POST", "/api/conversations", key=ka, json={"title": "alice's"}).json()
    assert api("GET", "/api/conversations", key=kb).json()["data"] == []
    assert api("GET", f"/api/conversations/{c['id']}", key=kb).status_code == 404
    assert api("DELETE", f"/api/conversations/{c['id']}", key=kb).status_code == 404
    assert api("GET", "/api/conversations").status_code == 401
