"""`chatsmith bench data|generate|train|peak`: the `bench` verb and its handler.

Each measurement parses the rest of the line itself (so `chatsmith bench generate --help` shows
its own flags) and prints JSON on its last line. Each runner imports its module when called:
they load torch, and `chatsmith --help` should not wait for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from chatsmith.common.paths import resolve_model


def _data(rest: list[str]) -> int:
    from chatsmith.data.cli import bench_data_main

    return bench_data_main(rest)


def _generate(rest: list[str]) -> int:
    from chatsmith.bench.generate import bench_generate_main

    if "--model" in rest[:-1]:  # accept a run name as chat does
        i = rest.index("--model") + 1
        rest[i] = str(resolve_model(rest[i]))
    return bench_generate_main(rest)


def _train(rest: list[str]) -> int:
    from chatsmith.bench.train import bench_train_main

    return bench_train_main(rest)


def _peak(rest: list[str]) -> int:
    from chatsmith.bench.peak import bench_peak_main

    return bench_peak_main(rest)


# In the order `chatsmith bench --help` lists them.
RUNNERS: dict[str, Callable[[list[str]], int]] = {
    "data": _data,
    "generate": _generate,
    "train": _train,
    "peak": _peak,
}


def add_bench_parser(sub: Any) -> None:
    """Register `bench` on an argparse subparsers object, with `run_bench` as its handler."""
    b = sub.add_parser("bench", help="speed measurements; JSON on the last line")
    b.add_argument("what", choices=list(RUNNERS), help="what to measure")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    return RUNNERS[args.what](list(args.rest))
