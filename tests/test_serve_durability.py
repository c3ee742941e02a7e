"""A server killed with SIGKILL mid-conversation loses no message it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from test_serve_helpers import free_port, tiny_model

from chatsmith.checkpoint import save_checkpoint


def start(model_dir, db_url, port, home, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CHATSMITH_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "chatsmith",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--db",
        db_url,
        "--served-model-name",
        "tiny",
        "--device",
        "cpu",
        *extra,
    ]
    log = home / f"server-{time.time()}.log"  # a file, not a pipe: a full pipe would stall the server
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.time() + 120
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    p.kill()
    raise RuntimeError("server did not become healthy")


def test_sigkill_loses_no_acknowledged_message(tiny_tok, tmp_path) -> None:
    model_dir = tmp_path / "tiny"
    save_checkpoint(model_dir, tiny_model(tiny_tok), tiny_tok, {"stage": "sft", "step": 0})
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    p = start(model_dir, db, port, tmp_path)
    acked = []
    try:
        conv = httpx.post(base + "/api/conversations", json={"title": "durable"}).json()
        parent = None
        for i in range(20):
            m = httpx.post(
                f"{base}/api/conversations/{conv['id']}/messages",
                json={
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": f"message {i} 你好",
                    "parent_id": parent,
                },
            )
            assert m.status_code == 200
            parent = m.json()["id"]
            acked.append(parent)
        # Kill it while it is generating an answer.
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 400,
            "stream": True,
            "ignore_eos": True,
        }
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i == 4:
                    os.kill(p.pid, signal.SIGKILL)
                    break
    finally:
        p.kill()
        p.wait(10)
    p2 = start(model_dir, db, port, tmp_path)
    try:
        got = httpx.get(f"{base}/api/conversations/{conv['id']}").json()
        assert [m["id"] for m in got["messages"]] == acked
        assert got["current_leaf"] == acked[-1]
        assert got["messages"][-1]["content"] == "message 19 你好"
        # SIGTERM drains: a stream in flight still runs to its end.
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 400,
            "stream": True,
            "ignore_eos": True,
        }
        lines = []
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if len(lines) == 2:
                    p2.send_signal(signal.SIGTERM)
                lines.append(line)
        assert lines[-2] == "data: [DONE]"
        assert '"finish_reason":"length"' in "".join(lines)
        assert p2.wait(60) == 0  # a clean exit once drained
    finally:
        p2.kill()
