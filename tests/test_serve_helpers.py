"""A live chatsmith server on 127.0.0.1 around a tiny random model (shared by the serve tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from chatsmith.common.config import ModelConfig
from chatsmith.engine.sequence import Event, Request
from chatsmith.model.build import build_model, gpt_config
from chatsmith.serve.backend import Backend
from chatsmith.serve.server import build_context
from chatsmith.serve.store import Store

CONTEXT = 512
MODEL = "tiny"


def tiny_model(tok, seed: int = 0):
    cfg = gpt_config(ModelConfig(depth=2, n_embd=64, head_dim=32, seq_len=CONTEXT), tok.vocab_size)
    torch.manual_seed(seed)
    return build_model(cfg, seed=seed).eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Live:
    url: str
    ctx: object
    backend: Backend
    store: Store


class ScriptedBackend(Backend):
    """Streams canned answers in 4-character pieces, `delay` seconds apart, and honours
    cancel as the engine does: slow enough to watch, stop, or disconnect from."""

    def __init__(self, tok, reply: Callable[[str, int], str], delay: float = 0.04) -> None:
        super().__init__("scripted")
        self.tok, self.reply, self.delay = tok, reply, delay
        self.count, self.cancelled, self.finished = 0, 0, 0
        self.created = int(time.time())
        self._ready.set()

    @property
    def context_length(self) -> int:
        return 100_000

    def submit(self, prompt, params, run_tools):
        req = Request(prompt, params, run_tools)
        self.count += 1
        self.last_prompt, self.last_params, self.last_ids = self.tok.decode(prompt), params, list(prompt)
        text = self.reply(self.tok.decode(prompt).rsplit("<|im_start|>user", 1)[-1], self.count)

        def run() -> None:
            pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
            reason = "stop"
            for k, piece in enumerate(pieces):
                if req.cancelled.is_set():
                    reason = "cancelled"
                    self.cancelled += 1
                    break
                req.push(Event("token", 0, token=k, text=piece))
                time.sleep(self.delay)
            self.finished += 1
            data = {"finish_reason": reason, "prompt_tokens": len(prompt), "completion_tokens": len(pieces)}
            req.push(Event("done", 0, data={**data, "tool_calls": []}))

        threading.Thread(target=run, daemon=True).start()
        return req


@contextlib.contextmanager
def live_server(tok, db_path: Path, backend: Backend | None = None, **ctx_kw) -> Iterator[Live]:
    import uvicorn

    from chatsmith.serve.app import create_app

    backend = backend or Backend.from_model(tiny_model(tok), tok, name=MODEL, max_batch=8)
    store = Store(f"sqlite:///{db_path}")
    ctx = build_context(backend, store, **ctx_kw)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", ctx, backend, store)
    finally:
        server.should_exit = True
        th.join(10)
        backend.shutdown(drain=False)
        store.close()
