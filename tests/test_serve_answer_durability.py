"""An answer the server streams is stored as it streams: kill -9 mid-answer leaves the
partial answer, marked "cut" by the next server; SIGINT leaves it stored, not lost."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
from test_serve_durability import start
from test_serve_helpers import free_port, tiny_model

from chatsmith.checkpoint import save_checkpoint


def _setup(tiny_tok, tmp_path):
    model_dir = tmp_path / "tiny"
    save_checkpoint(model_dir, tiny_model(tiny_tok), tiny_tok, {"stage": "sft", "step": 0})
    return model_dir, f"sqlite:///{tmp_path / 'chat.db'}", free_port()


def _ask(base: str) -> tuple[str, str]:
    conv = httpx.post(base + "/api/conversations", json={"title": "cut"}).json()["id"]
    m = httpx.post(f"{base}/api/conversations/{conv}/messages", json={"role": "user", "content": "hi"})
    return conv, m.json()["id"]


def _row(base: str, conv: str, mid: str) -> dict:
    return next(m for m in httpx.get(f"{base}/api/conversations/{conv}").json()["messages"] if m["id"] == mid)


def _stream_then(base: str, conv: str, user: str, after: int, act, read_on: bool) -> tuple[str, str, bool]:
    """Stream an answer; after `after` content chunks call act() (and read on to the end if
    `read_on`); returns (message id, text seen, whether the stream finished before act)."""
    body = {"parent_id": user, "max_tokens": 480, "temperature": 1.0, "seed": 1}
    text, n, mid, finished, done_before = "", 0, "", False, False
    with httpx.stream("POST", f"{base}/api/conversations/{conv}/answer", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            c = json.loads(line[6:])
            mid = c["message_id"]
            finished = finished or c["choices"][0]["finish_reason"] is not None
            text += c["choices"][0]["delta"].get("content") or ""
            n += 1
            if n == after:
                done_before = finished
                act()
                if not read_on:
                    break
    return mid, text, done_before
    return mid, text, finished


@pytest.mark.slow  # three server starts
def test_kill_mid_answer_keeps_the_partial_answer_as_cut(tiny_tok, tmp_path) -> None:
    model_dir, db, port = _setup(tiny_tok, tmp_path)
    base = f"http://127.0.0.1:{port}"
    p = start(model_dir, db, port, tmp_path, "--compile", "off")
    try:
        conv, user = _ask(base)
        mid, seen, finished = _stream_then(base, conv, user, 6, lambda: os.kill(p.pid, signal.SIGKILL), False)
        assert not finished and seen
    finally:
        p.kill()
        p.wait(10)
    p = start(model_dir, db, port, tmp_path, "--compile", "off")
    try:
        row = _row(base, conv, mid)
        assert row["status"] == "cut" and row["parent_id"] == user
        assert row["content"] and (seen.startswith(row["content"]) or row["content"].startswith(seen))
        # SIGINT mid-answer: the server drains or stops the stream; either way it is stored.
        conv, user = _ask(base)
        mid, seen, _ = _stream_then(base, conv, user, 6, lambda: p.send_signal(signal.SIGINT), True)
        p.wait(60)
    finally:
        p.kill()
        p.wait(10)
    p = start(model_dir, db, port, tmp_path, "--compile", "off")
    try:
        row = _row(base, conv, mid)
        assert row["status"] in ("done", "length", "stopped") and seen and row["content"] == seen
    finally:
        p.kill()
        p.wait(10)
