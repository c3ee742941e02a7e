"""The event loop stays free while requests are templated and tokenized; /metrics counts
every response (500s included) and the tokens of streams the client cancelled."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time

import httpx
from test_serve_helpers import ScriptedBackend, live_server

from chatsmith.serve.app import create_app
from chatsmith.serve.server import build_context
from chatsmith.serve.store import Store


def test_a_huge_body_does_not_stall_a_running_stream(tiny_tok, tmp_path) -> None:
    backend = ScriptedBackend(tiny_tok, lambda _p, _n: "x" * 4 * 120, delay=0.03)
    with live_server(tiny_tok, tmp_path / "l.db", backend=backend) as s:
        huge = json.dumps({"messages": [{"role": "user", "content": "hi"}] * 100_000}).encode()
        results: list[int] = []

        def send_huge() -> None:
            r = httpx.post(s.url + "/v1/chat/completions", content=huge, timeout=120,
                           headers={"content-type": "application/json"})
            results.append(r.status_code)

        body = {"messages": [{"role": "user", "content": "talk"}], "stream": True}
        stamps = []
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=60) as r:
            for i, line in enumerate(r.iter_lines()):
                if line.startswith("data: "):
                    stamps.append(time.perf_counter())
                if i == 10:
                    senders = [threading.Thread(target=send_huge) for _ in range(2)]
                    for t in senders:
                        t.start()
        for t in senders:
            t.join(120)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(results) == 2 and all(code == 400 for code in results), results  # too long for nothing
    assert max(gaps) < 0.5, f"the stream stalled for {max(gaps):.2f} s"


class Broken(ScriptedBackend):
    def submit(self, prompt, params, run_tools):
        raise RuntimeError("a bug")


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_count_500s(tiny_tok, tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    app = create_app(build_context(Broken(tiny_tok, lambda _p, _n: ""), store))

    async def go() -> str:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
            return (await c.get("/metrics")).text

    text = asyncio.run(go())
    store.close()
    labels = '{endpoint="/v1/chat/completions",status="500"}'
    assert _metric(text, "chatsmith_requests_total", labels) == 1.0


def test_metrics_count_tokens_of_cancelled_streams(tiny_tok, tmp_path) -> None:
    backend = ScriptedBackend(tiny_tok, lambda _p, _n: "y" * 4 * 400, delay=0.02)
    with live_server(tiny_tok, tmp_path / "c.db", backend=backend) as s:
        body = {"messages": [{"role": "user", "content": "talk"}], "stream": True}
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=60) as r:
            seen = sum(1 for _, line in zip(range(12), r.iter_lines()) if line.startswith("data: {"))
        deadline = time.time() + 10
        while backend.cancelled == 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        text = httpx.get(s.url + "/metrics").text
    assert _metric(text, "chatsmith_generation_tokens_total") >= seen - 1 > 0
    assert _metric(text, "chatsmith_generation_tokens_total") < 400
