"""`chatsmith serve` and `chatsmith keys`: wiring from the command line to the server and the store.

Wiring (chatsmith/cli.py): `add_serve_parser(sub)` in build_parser registers `run_serve(args)`
for `serve` and `run_keys(args)` for `keys` as their handlers. User mistakes raise ChatsmithError
(one line, exit code 2).
"""

from __future__ import annotations

import argparse
import datetime
import os

from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.memory import add_memory_flags, add_threads_flag, add_weights_flag


def _db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("CHATSMITH_DB"),
        help="database URL (default: sqlite under CHATSMITH_HOME; e.g. postgresql+psycopg://user@host/db)",
    )


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible API server and the web app")
    s.add_argument("--model", default="demo", help="checkpoint folder, or a run name (default: demo)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    _db_flag(s)
    s.add_argument(
        "--served-model-name", default=None, help="the model id clients use (default: folder name)"
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--max-batch", type=int, default=32, help="sequences decoded together")
    add_memory_flags(s)
    s.add_argument("--max-waiting", type=int, default=256, help="queued requests before 503")
    s.add_argument(
        "--compile",
        choices=["on", "off"],
        default="on",
        help="decode through one compiled graph (seconds to compile once, then cached; faster steps)",
    )
    add_weights_flag(s)
    add_threads_flag(s)
    s.add_argument(
        "--require-keys",
        choices=["auto", "yes", "no"],
        default="auto",
        help="auto: keys are required once one was made (chatsmith keys create), even after "
        "revoking them all; no: turn keys off",
    )
    s.add_argument("--rate-limit", type=int, default=0, help="requests per minute per key (0 = none)")
    s.add_argument("--max-body-mb", type=float, default=4.0, help="largest request body accepted")
    s.set_defaults(func=run_serve)

    k = sub.add_parser("keys", help="create, list and revoke API keys")
    k.set_defaults(func=run_keys)
    ksub = k.add_subparsers(dest="action", required=True)
    kc = ksub.add_parser("create", help="create a key (shown once)")
    kc.add_argument("--user", default="default", help="who the key belongs to (created if new)")
    kc.add_argument("--name", default="", help="a label for the key")
    kc.add_argument("--rpm", type=int, default=None, help="this key's requests per minute")
    _db_flag(kc)
    kl = ksub.add_parser("list", help="list keys (never the keys themselves)")
    _db_flag(kl)
    kr = ksub.add_parser("revoke", help="revoke a key by id or prefix")
    kr.add_argument("key", help="the id or prefix `keys list` shows")
    _db_flag(kr)


def run_keys(args: argparse.Namespace) -> int:
    from chatsmith.serve.auth import create_key
    from chatsmith.serve.store import Store

    store = Store(args.db)
    try:
        if args.action == "create":
            if args.rpm is not None and args.rpm < 1:
                raise ChatsmithError(f"--rpm must be >= 1, got {args.rpm}")
            key_id, key = create_key(store, args.user, args.name, args.rpm)
            print(f"created key {key_id} for user {args.user!r}. It is shown only now; keep it:\n{key}")
        elif args.action == "list":
            rows = store.list_keys()
            if not rows:
                print("no keys (the server accepts requests without one until a key is made)")
            for k, user in rows:
                when = datetime.datetime.fromtimestamp(k.created_at).strftime("%Y-%m-%d %H:%M")
                state = "revoked" if k.revoked else "active"
                rpm = k.rpm if k.rpm is not None else "-"
                print(f"{k.id}  {k.prefix}…  user={user}  rpm={rpm}  {state}  created {when}  {k.name}")
        elif args.action == "revoke":
            k = store.revoke_key(args.key)
            print(f"revoked key {k.id} ({k.prefix}…)")
    finally:
        store.close()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    if args.verb == "keys":
        return run_keys(args)
    from chatsmith.common.paths import resolve_model
    from chatsmith.serve.server import ServeConfig, serve

    if args.max_body_mb <= 0:
        raise ChatsmithError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    cfg = ServeConfig(
        model=str(resolve_model(args.model)),
        host=args.host,
        port=args.port,
        db=args.db,
        served_model_name=args.served_model_name,
        device=args.device,
        max_batch=args.max_batch,
        max_waiting=args.max_waiting,
        kv_budget=args.kv_budget,
        max_context=args.max_context,
        threads=args.threads,
        compile=args.compile == "on",
        weights=args.weights,
        require_keys={"auto": None, "yes": True, "no": False}[args.require_keys],
        rate_limit=args.rate_limit or None,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
    )
    serve(cfg)
    return 0
