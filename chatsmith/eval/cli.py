"""`chatsmith eval` and `chatsmith report` from the command line.

    chatsmith eval --model RUN_OR_CHECKPOINT --tasks arc.jsonl gsm8k.jsonl bpb:val.bin [--limit 100]
    chatsmith eval --model demo                   # every stage of a run on bpb + the demo's tasks
    chatsmith eval --convert arc --input ARC-Challenge-Test.jsonl --out arc.jsonl
    torchrun --standalone --nproc_per_node=2 -m chatsmith eval --model demo/sft --tasks ...
    chatsmith report demo                         # RUN/report.md and RUN/report.html

Wiring (chatsmith/cli.py): `add_eval_parser(sub)` in build_parser registers both verbs,
and `run_eval(args)` runs either.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.common.paths import home, run_dir
from chatsmith.engine.memory import add_weights_flag


def add_eval_parser(subparsers: Any) -> None:
    e = subparsers.add_parser("eval", help="evaluate a checkpoint (or every stage of a run) on tasks")
    e.add_argument("--model", help="a checkpoint folder, or a run name/folder (then every stage)")
    e.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="task files (.jsonl, see docs/tasks.md) and bpb:PATH (held-out .bin shard, .txt or .jsonl); "
        "default for a run: bpb + the demo's tasks",
    )
    e.add_argument("--stages", nargs="+", default=None, help="stages of a run to evaluate (default: all)")
    e.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples of each task")
    e.add_argument("--seed", type=int, default=1337, help="few-shot draws and sampling")
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    e.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward pass when scoring")
    e.add_argument("--workers", type=int, default=2, help="concurrent sandboxed programs (code tasks)")
    e.add_argument("--max-new-tokens", type=int, default=None, help="cap every task's generation length")
    e.add_argument("--out", default=None, help="write the results as JSON here")
    e.add_argument("--no-cache", action="store_true", help="recompute even when a cached result exists")
    add_weights_flag(e)
    e.add_argument(
        "--convert",
        default=None,
        help="convert a benchmark file instead: arc, hellaswag, mmlu, gsm8k, humaneval",
    )
    e.add_argument("--input", default=None, help="with --convert: the benchmark file or folder")
    e.add_argument(
        "--num-fewshot", type=int, default=None, help="with --convert: few-shot examples per prompt"
    )
    e.add_argument("--format", default=None, choices=["text", "chat"], help="with --convert: prompt format")
    e.add_argument("--tools", action="store_true", default=None, help="with --convert: allow the calculator")
    e.set_defaults(func=run_eval)

    r = subparsers.add_parser("report", help="write the report card of a run (report.md + report.html)")
    r.add_argument("run", nargs="?", default="demo", help="run name or folder (default: demo)")
    r.add_argument("--price-per-hour", type=float, default=None, help="machine price, for the cost column")
    r.set_defaults(func=run_eval)


def _run_folder(name: str) -> Path:
    p = Path(name).expanduser()
    if not p.exists() and "/" not in name:
        p = run_dir(name)
    if not p.is_dir():
        raise ChatsmithError(f"no run folder at {p}")
    return p


def _print(results: dict[str, dict[str, Any]], prefix: str = "") -> None:
    for name, r in results.items():
        m = r["metrics"]
        shown = {
            k: v for k, v in m.items() if not k.startswith("n/") and k not in ("tokens", "bytes", "chance")
        }
        figs = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        print(f"{prefix}{name}: {figs}{'  (cached)' if r.get('cached') else ''}")


def run_eval(args: argparse.Namespace) -> int:
    if args.verb == "report":
        from chatsmith.eval.report import write_report

        folder = _run_folder(args.run)
        md = write_report(folder, None, args.price_per_hour)
        print(f"report: {md}\n        {md.with_suffix('.html')}")
        return 0
    if args.convert:
        from chatsmith.eval.converters import convert

        if not args.input or not args.out:
            raise ChatsmithError("--convert needs --input (the benchmark file) and --out (the task file)")
        header = {"num_fewshot": args.num_fewshot, "format": args.format, "tools": args.tools}
        out = convert(args.convert, args.input, args.out, **header)
        print(f"wrote {out}")
        return 0
    if not args.model:
        raise ChatsmithError("eval needs --model (a checkpoint folder or a run name), or --convert")
    return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from chatsmith import kernels
    from chatsmith.checkpoint import load_checkpoint
    from chatsmith.common.device import pick_device, pick_dtype
    from chatsmith.common.dist import barrier, cleanup, init_distributed, is_main, local_device
    from chatsmith.eval.cache import checkpoint_key, has_weights
    from chatsmith.eval.runner import EvalSettings, evaluate_model, evaluate_stages, write_results

    device = pick_device(args.device)
    init_distributed(device)
    device = local_device(device)
    dtype = pick_dtype(args.dtype, device)
    st = EvalSettings(
        seed=args.seed,
        limit=args.limit,
        batch_tokens=args.batch_tokens,
        workers=args.workers,
        max_new_tokens=args.max_new_tokens,
    )
    p = Path(args.model).expanduser()
    if not p.exists() and "/" not in args.model:
        p = run_dir(args.model)
    try:
        if has_weights(p):
            if not args.tasks:
                raise ChatsmithError("evaluating one checkpoint needs --tasks (task files or bpb:PATH)")
            model, tok, _ = load_checkpoint(p, device)
            key = checkpoint_key(p) + ("-int8" if kernels.set_weights(model, args.weights) else "")
            cache_dir = None if args.no_cache else home() / "eval_cache"
            results: dict[str, Any] = evaluate_model(model, tok, args.tasks, st, dtype, key, cache_dir)
            if is_main():
                _print(results)
        elif p.is_dir() and args.weights != "bf16":
            raise ChatsmithError("--weights applies to one checkpoint folder, not to every stage of a run")
        elif p.is_dir():
            results = evaluate_stages(
                p, args.stages, device, dtype, st, args.tasks, use_cache=not args.no_cache
            )
            if is_main():
                for stage, r in results.items():
                    _print(r.get("tasks", {}), f"{stage} · ")
        else:
            raise ChatsmithError(f"no checkpoint or run folder at {p}")
        if args.out:
            write_results(Path(args.out), results)
        barrier()  # no process leaves the group while another still talks to it
    finally:
        cleanup()
    return 0
