"""`chatsmith serve`: open the store, load the model in the background, run uvicorn.

/health answers 503 until the weights are loaded. On SIGINT/SIGTERM uvicorn stops
accepting connections and waits for in-flight requests (streams included) to finish;
then the engine drains and stops.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from chatsmith.common.device import set_threads
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info
from chatsmith.serve.auth import Authenticator
from chatsmith.serve.backend import Backend
from chatsmith.serve.context import ServerContext
from chatsmith.serve.limits import RateLimiter
from chatsmith.serve.metrics import Metrics
from chatsmith.serve.store import Store


@dataclass
class ServeConfig:
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    db: str | None = None
    served_model_name: str | None = None
    device: str = "auto"
    max_batch: int = 32
    max_waiting: int = 256
    kv_budget: str | None = None  # tokens ("64k") or bytes ("1.5GB"); None: from free memory
    max_context: int | None = None  # None: the model's
    compile: bool = True  # the decode step as one compiled graph (engine/decode.py)
    threads: int = 0  # CPU threads; 0: the cores other processes leave free (common/cpu_share.py)
    weights: str = "bf16"  # "int8": 8-bit weight copies for CPU decoding (chatsmith.kernels)
    require_keys: bool | None = None  # None: once a key exists
    rate_limit: int | None = None  # requests per minute per key, unless the key sets its own
    max_body_bytes: int = 4 * 1024 * 1024
    drain_seconds: int = 60


def build_context(
    backend: Backend,
    store: Store,
    require_keys: bool | None = None,
    rate_limit: int | None = None,
    max_body_bytes: int = 4 * 1024 * 1024,
) -> ServerContext:
    return ServerContext(
        backend=backend,
        store=store,
        auth=Authenticator(store, require_keys, rate_limit),
        limiter=RateLimiter(),
        metrics=Metrics(backend.stats),
        max_body_bytes=max_body_bytes,
    )


def model_name(path: str) -> str:
    p = Path(path)
    # A run's stage folder (runs/demo/sft) is named after the run, not the stage.
    if p.name in ("base", "sft", "dpo", "rl", "rm") and p.parent.name:
        return p.parent.name
    return p.name or "chatsmith"


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    from chatsmith.serve.app import STATIC, create_app

    if not Path(cfg.model).is_dir():
        raise ChatsmithError(
            f"no checkpoint at {cfg.model}: pass --model with a checkpoint folder or a run name "
            "(`make demo` trains one named demo)"
        )
    set_threads(cfg.threads)  # before the engine's thread starts its OpenMP team
    store = Store(cfg.db)
    cut = store.cut_streaming()  # answers the last server was streaming when it died
    if cut:
        info(f"{cut} answer(s) cut off by the last server's end are stored as 'cut'")
    backend = Backend(
        cfg.served_model_name or model_name(cfg.model),
        cfg.max_batch,
        cfg.max_waiting,
        cfg.compile,
        kv_budget=cfg.kv_budget,
        max_context=cfg.max_context,
        weights=cfg.weights,
    )
    backend.load_in_background(cfg.model, cfg.device)
    ctx = build_context(backend, store, cfg.require_keys, cfg.rate_limit, cfg.max_body_bytes)
    app = create_app(ctx)
    url = f"http://{cfg.host}:{cfg.port}/"
    info(f"chatsmith serve: model {backend.name} from {cfg.model}; database {store.url}")
    if not (STATIC / "index.html").is_file():
        info("the web app is not built (make web); the API works without it")
    info(f"open {url}  (OpenAI API at {url}v1)")
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        timeout_graceful_shutdown=cfg.drain_seconds,
        limit_concurrency=4 * (cfg.max_waiting + cfg.max_batch),
    )
    # uvicorn re-raises SIGTERM once it has drained; a no-op handler turns that into a
    # normal return, so the engine is drained and the store closed below (exit code 0).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        backend.shutdown(drain=True, timeout=cfg.drain_seconds)
        store.close()
