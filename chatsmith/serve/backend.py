"""The one place the server touches the engine: load a model, submit prompts, read stats.

The engine runs its scheduler on its own thread, so the HTTP event loop only ever
queues work and awaits events; it never runs the model.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import torch

from chatsmith import kernels
from chatsmith.common.device import pick_dtype
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info
from chatsmith.engine.engine import Engine, EngineFull, Event, PromptTooLong, Request
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tokenizer.bpe import BPETokenizer

__all__ = ["Backend", "EngineFull", "Event", "PromptTooLong", "Request", "SamplingParams"]


def freeze_heap() -> None:
    """Take everything alive after start-up (the model, torch, the app) out of the garbage
    collector's view, as vLLM's engine does: a full collection otherwise walks it all,
    about 0.3 s on the demo server every 10 s or so under load, which stalls every stream
    (the load test's TTFT tail)."""
    gc.collect()
    gc.freeze()


class Backend:
    def __init__(
        self,
        name: str,
        max_batch: int = 32,
        max_waiting: int = 256,
        compile: bool = False,
        kv_budget: str | None = None,
        max_context: int | None = None,
        weights: str = "bf16",
    ) -> None:
        self.name, self.weights = name, weights
        self.max_batch, self.max_waiting, self.compile = max_batch, max_waiting, compile
        self.kv_budget, self.max_context = kv_budget, max_context
        self.engine: Engine | None = None
        self.tok: BPETokenizer | None = None
        self.error: str | None = None
        self.created = 0
        self._ready = threading.Event()

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, tok: BPETokenizer, name: str = "chatsmith", **kw: Any) -> Backend:
        """A backend around a model already in memory (tests, notebooks)."""
        b = cls(name, **kw)
        b._start(model, tok)
        return b

    def load_in_background(self, path: str, device: str = "auto") -> threading.Thread:
        """Load on a thread so the server answers /health (503) while the weights load."""

        def run() -> None:
            try:
                from chatsmith.checkpoint import load_checkpoint
                from chatsmith.common.device import pick_device

                model, tok, _meta = load_checkpoint(Path(path), pick_device(device))
                self._start(model, tok)
                freeze_heap()
                info(f"model {self.name} loaded from {path}")
            except ChatsmithError as e:
                self.error = str(e)
            except Exception as e:  # keep serving errors instead of dying silently
                self.error = f"{type(e).__name__}: {e}"

        t = threading.Thread(target=run, name="chatsmith-load", daemon=True)
        t.start()
        return t

    def _start(self, model: Any, tok: BPETokenizer) -> None:
        # Compiled: bf16 where the hardware has it, which batches far better than float32 on
        # CPUs (bench generate --dtype). Eager on CPUs: float32, since ATen's bf16 path for one
        # token at a time is slower there.
        kernels.set_weights(model, self.weights)  # int8 weight copies, when asked for
        device = next(model.parameters()).device
        dtype = pick_dtype("auto", device) if self.compile or device.type != "cpu" else torch.float32
        self.engine = Engine(
            model,
            tok,
            dtype=dtype,
            max_batch=self.max_batch,
            max_waiting=self.max_waiting,
            compile=self.compile,
            kv_budget=self.kv_budget,
            max_context=self.max_context,
        )
        self.engine.start()
        self.tok = tok
        self.created = int(time.time())
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # -- serving -------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        assert self.engine is not None
        return self.engine.context_length

    def submit(self, prompt: list[int], params: SamplingParams, run_tools: bool) -> Request:
        """Raises PromptTooLong, EngineFull, or ChatsmithError for a bad parameter."""
        assert self.engine is not None
        return self.engine.submit(prompt, params, run_tools=run_tools)

    def stats(self) -> dict[str, Any]:
        if self.engine is None:
            return {"running": 0, "waiting": 0}
        return self.engine.stats()

    def shutdown(self, drain: bool = True, timeout: float | None = 60) -> None:
        if self.engine is not None:
            self.engine.shutdown(drain=drain, timeout=timeout)
