"""Shared pieces of the browser tests: Debian's chromium, a page on a live server with a
scripted backend, and (run as a script) that server in its own process, to kill mid-answer."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_serve_helpers import ScriptedBackend, live_server

from chatsmith.engine.sequence import Event, Request
from chatsmith.serve.app import STATIC

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).parent.parent / "web" / "node_modules" / "axe-core" / "axe.min.js"
needs_browser = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)"),
    pytest.mark.skipif(not (STATIC / "index.html").is_file(), reason="the web app is not built (make web)"),
]
READY = "#model-name:text('scripted')"  # the page has asked the server for its model
LONG = " ".join(f"word{i}" for i in range(400))


def reply_for(prompt_text: str, n: int) -> str:
    """Canned answers picked by a word in the question."""
    if "empty please" in prompt_text:
        return ""
    if "long story" in prompt_text:
        return LONG
    return f"Answer number {n}: hello **there**."


class PagedBackend(ScriptedBackend):
    """The scripted backend with a context window and a token limit, as a real model has:
    each 4-character piece counts as one token; max_new_tokens ends the answer with "length"."""

    def __init__(
        self, tok, reply: Callable[[str, int], str] = reply_for, delay: float = 0.03, context: int = 100_000
    ) -> None:
        super().__init__(tok, reply, delay)
        self.context = context

    @property
    def context_length(self) -> int:
        return self.context

    def submit(self, prompt, params, run_tools):
        req = Request(prompt, params, run_tools)
        self.count += 1
        self.last_prompt, self.last_params = self.tok.decode(prompt), params
        text = self.reply(self.last_prompt.rsplit("<|im_start|>user", 1)[-1], self.count)
        threading.Thread(target=self._run, args=(req, text, len(prompt)), daemon=True).start()
        return req

    def _run(self, req: Request, text: str, n_prompt: int) -> None:
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        limit = req.params.max_new_tokens
        reason = "length" if len(pieces) > limit else "stop"
        for k, piece in enumerate(pieces[:limit]):
            if req.cancelled.is_set():
                reason = "cancelled"
                self.cancelled += 1
                break
            req.push(Event("token", 0, token=k, text=piece))
            time.sleep(self.delay)
        self.finished += 1
        used = min(len(pieces), limit)
        data = {"finish_reason": reason, "prompt_tokens": n_prompt, "completion_tokens": used}
        req.push(Event("done", 0, data={**data, "tool_calls": []}))


def open_page(browser, url: str, viewport: tuple[int, int] = (1100, 800), ready: str = READY):
    """A fresh context and page, loaded and ready; page errors are collected in `page.errors`."""
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(url + "/")
    pg.wait_for_selector(ready, state="attached")
    return pg


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tiny_tok, tmp_path_factory):
    with live_server(tiny_tok, tmp_path_factory.mktemp("web") / "w.db", backend=PagedBackend(tiny_tok)) as s:
        yield s


@pytest.fixture
def page(browser, server):
    pg = open_page(browser, server.url)
    yield pg
    pg.context.close()
    assert not pg.errors, pg.errors


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_idle(page) -> None:
    """Until the answer is streamed and the page has the stored conversation back."""
    page.wait_for_function("!document.body.classList.contains('busy')")


def last_answer(page):
    return page.locator(".msg.assistant").last


# -- the scripted server in a process of its own ------------------------------------------
def spawn_server(db: Path, port: int, log: Path) -> subprocess.Popen:
    """Start this file as a server on `port` over `db`; return once /health answers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    cmd = [sys.executable, __file__, "--db", str(db), "--port", str(port)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("a"))
    deadline = time.time() + 60
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    p.kill()
    raise RuntimeError("server did not become healthy")


def durable_reply(prompt_text: str, n: int) -> str:
    """The first question of a server's life gets a long answer (to kill it during); others are short."""
    return LONG if n == 1 and "long story" in prompt_text else f"Answer number {n}: hello **there**."


def _serve_main() -> None:
    """`chatsmith serve`'s own start and shutdown path, with the scripted backend for the model."""
    import tempfile

    from conftest import tiny_corpus

    from chatsmith.serve import server
    from chatsmith.tokenizer.bpe import BPETokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    tok = BPETokenizer.train(tiny_corpus(), vocab_size=600)

    class Scripted(PagedBackend):
        def __init__(self, name: str, *args, **kw) -> None:
            super().__init__(tok, durable_reply, delay=0.05)

        def load_in_background(self, path: str, device: str) -> None:
            pass  # nothing to load: the answers are scripted

    server.Backend = Scripted
    with tempfile.TemporaryDirectory() as model_dir:
        cfg = server.ServeConfig(model_dir, port=a.port, db=f"sqlite:///{a.db}", served_model_name="scripted")
        cfg.drain_seconds = 2  # SIGINT: the open answer stream is cut after 2 s, not 60
        server.serve(cfg)


def iter_buttons(page) -> Iterator[dict]:
    """Every visible button's id, class and accessible name (aria-label, labelledby or text)."""
    yield from page.evaluate(
        """() => [...document.querySelectorAll('button, [role=button]')]
          .filter(b => b.offsetParent !== null)
          .map(b => ({id: b.id, cls: b.className,
                      name: (b.getAttribute('aria-label') || b.textContent || '').trim()}))"""
    )


if __name__ == "__main__":
    _serve_main()
