"""Load test (`make loadtest`): 32 concurrent streaming clients for 60 s against the demo model.

Zero errors allowed; p50/p99 time to first token and total tokens/s are printed as JSON
on the last line; the server's memory at the end must be within 10 % of its memory
after warm-up. Under `make loadtest` (CHATSMITH_LOADTEST_STRICT=1, a quiet machine) each
prompt's TTFT p99 must be within 5x its p50, and so must the mix of prompts without a
tool turn; the slow suite in CI checks errors and memory only. TTFT counts the first content:
the calculator prompt's hidden tool turn (its call, the tool's answer) comes first, so that
prompt's TTFT is several times the others' even with one client; the JSON gives the mix's
figures and each prompt's.
CHATSMITH_LOADTEST_MODEL / _SECONDS / _CLIENTS change the defaults.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve_helpers import free_port

from chatsmith.common.paths import resolve_model

MODEL = os.environ.get("CHATSMITH_LOADTEST_MODEL", "demo")
SECONDS = float(os.environ.get("CHATSMITH_LOADTEST_SECONDS", "60"))
CLIENTS = int(os.environ.get("CHATSMITH_LOADTEST_CLIENTS", "32"))
WARMUP = 10.0
PROMPTS = ["What is 37 * 41?", "Who are you?", "你好，你是谁？", "Spell the word banana.", "Tell me a story."]
TOOL_PROMPTS = {"What is 37 * 41?"}  # answered after a hidden calculator turn
STRICT = os.environ.get("CHATSMITH_LOADTEST_STRICT") == "1"  # set by `make loadtest`


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def client(i: int, url: str, model: str, stop_at: float, out: dict) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        k = 0
        while time.perf_counter() < stop_at:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": PROMPTS[(i + k) % len(PROMPTS)]}],
                "max_tokens": 48,
                "temperature": 0.8,
                "seed": i * 1000 + k,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            k += 1
            t0 = time.perf_counter()
            first, tokens, done = None, 0, False
            try:
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        out["errors"].append(f"{r.status_code}: {(await r.aread())[:200]!r}")
                        continue
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if line == "data: [DONE]":
                            done = True
                            break
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            out["errors"].append(chunk["error"]["message"])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        elif (
                            first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content")
                        ):
                            first = time.perf_counter() - t0
            except httpx.HTTPError as e:
                out["errors"].append(f"{type(e).__name__}: {e}")
                continue
            if not done:
                out["errors"].append("stream ended without [DONE]")
            out["ttft"].append(first if first is not None else time.perf_counter() - t0)
            out["prompt"].append(PROMPTS[(i + k - 1) % len(PROMPTS)])
            out["tokens"].append((time.perf_counter(), tokens))


async def run_load(url: str, model: str, pid: int) -> dict:
    out: dict = {"errors": [], "ttft": [], "prompt": [], "tokens": []}
    start = time.perf_counter()
    stop_at = start + WARMUP + SECONDS
    tasks = [asyncio.create_task(client(i, url, model, stop_at, out)) for i in range(CLIENTS)]
    await asyncio.sleep(WARMUP)
    out["rss_warm"] = rss_mb(pid)
    n_warm = len(out["ttft"])
    await asyncio.gather(*tasks)
    out["rss_end"] = rss_mb(pid)
    out["measured_from"] = (start + WARMUP, n_warm)
    out["elapsed"] = time.perf_counter() - start - WARMUP
    return out


@pytest.mark.slow
def test_load_32_streaming_clients(tmp_path) -> None:
    path = resolve_model(MODEL)
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"no model at {path}: run `make demo` first (or set CHATSMITH_LOADTEST_MODEL)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "chatsmith",
        "serve",
        "--model",
        str(path),
        "--port",
        str(port),
        "--db",
        f"sqlite:///{tmp_path / 'load.db'}",
        "--served-model-name",
        "load",
    ]
    log = tmp_path / "server.log"
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        # A fresh machine first builds the CPU kernels (about 2 minutes on 2 cores).
        deadline = time.time() + 600
        while True:
            assert p.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the server did not become healthy"
            time.sleep(0.3)
        out = asyncio.run(run_load(url, "load", p.pid))
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError(f"the server did not drain and exit: {log.read_text()[-2000:]}") from None
    t_from, n_warm = out["measured_from"]
    ttft = sorted(out["ttft"][n_warm:])
    measured = list(zip(out["ttft"][n_warm:], out["prompt"][n_warm:]))
    by_prompt = {q: sorted(t for t, p in measured if p == q) for q in PROMPTS}
    tokens = sum(n for t, n in out["tokens"] if t >= t_from)
    result = {
        "clients": CLIENTS,
        "seconds": round(out["elapsed"], 1),
        "requests": len(ttft),
        "errors": len(out["errors"]),
        **percentiles(ttft),
        "by_prompt": {q: {"requests": len(v), **percentiles(v)} for q, v in by_prompt.items()},
        "mix_without_tool_turns": percentiles(sorted(t for t, q in measured if q not in TOOL_PROMPTS)),
        "tokens_per_s": round(tokens / out["elapsed"], 1),
        "rss_warm_mb": round(out["rss_warm"], 1),
        "rss_end_mb": round(out["rss_end"], 1),
    }
    print(json.dumps(result))
    assert not out["errors"], out["errors"][:5]
    assert ttft, "no request finished after warm-up"
    assert out["rss_end"] <= 1.10 * out["rss_warm"], result
    if not STRICT:
        return  # timings count on a quiet machine only (`make loadtest`), not in a shared CI run
    # Per prompt, and over the mix of prompts without a tool turn: the calculator prompt's
    # TTFT includes its hidden tool turn (the call, the tool's answer: about 9x the others'
    # at p50), so over the whole mix p99 measures that prompt's share, not starvation.
    for q, f in result["by_prompt"].items():
        assert f["ttft_p99_s"] <= 5 * f["ttft_p50_s"], (q, result)
    plain = result["mix_without_tool_turns"]
    assert plain["ttft_p99_s"] <= 5 * plain["ttft_p50_s"], result


def percentiles(ttft: list[float]) -> dict[str, float | None]:
    """p50 and p99 of sorted TTFTs, in seconds."""
    if not ttft:
        return {"ttft_p50_s": None, "ttft_p99_s": None}
    p99 = ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))]
    return {"ttft_p50_s": round(statistics.median(ttft), 4), "ttft_p99_s": round(p99, 4)}
