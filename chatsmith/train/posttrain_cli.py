"""`chatsmith sft|dpo|rm|rl`: each post-training stage on its own, from files or the built-in tasks.

    chatsmith sft --data chats.jsonl:2 --data smoltalk.parquet --synthetic 5000 [--skip-bad] [--tokens N]
    chatsmith dpo --data prefs.jsonl [--val-data held.jsonl]     # or the built-in pairs
    chatsmith rm  --data prefs.jsonl                             # reward model -> <run>/rm
    chatsmith rl  [--rm <run>/rm --rl.rm_weight=0.5]             # GRPO on the built-in word problems
    chatsmith rl  --data gsm8k.jsonl [--val-data held.jsonl]     # GRPO on a task file (docs/tasks.md)

Each reads the previous stage of the run (`--run NAME`, default the preset's) unless `--init`
says otherwise, writes `<run>/<stage>` unless `--out` does, and continues an interrupted run
with `--resume auto`. `--section.key=value` overrides any config value (e.g. --dpo.beta=0.2).
Wiring (chatsmith/cli.py): `add_posttrain_parsers(sub)` and `run_posttrain(args, overrides)`.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatsmith.common.config import Config, make_config
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import MetricsLog, info, is_main_process
from chatsmith.common.paths import run_dir

# Torch-heavy modules are imported inside the verbs, so `chatsmith --help` stays quick.

VERBS = ("sft", "dpo", "rm", "rl")
# Where each stage starts from by default, in order of preference.
INIT = {"sft": ("base",), "dpo": ("sft",), "rm": ("sft",), "rl": ("dpo", "sft")}


def add_posttrain_parsers(sub: Any) -> None:
    helps = {
        "sft": "supervised fine-tuning on TRL-format conversations and/or the built-in tasks",
        "dpo": "Direct Preference Optimization on prompt/chosen/rejected pairs",
        "rm": "train a reward model (scalar head, Bradley-Terry loss) on preference pairs",
        "rl": "GRPO reinforcement learning on a task file or the word problems (and a reward model)",
    }
    for verb in VERBS:
        p = sub.add_parser(verb, help=helps[verb])
        # The handler: config overrides (`--dpo.beta=0.2`) arrive on args.overrides.
        p.set_defaults(func=lambda a: run_posttrain(a, a.overrides), takes_overrides=True)
        p.add_argument("--preset", default="demo", help="config preset (name or .toml path)")
        p.add_argument(
            "--run", default=None, help="run name under $CHATSMITH_HOME/runs (default: the preset's)"
        )
        p.add_argument(
            "--init", default=None, help="checkpoint to start from (default: the run's previous stage)"
        )
        p.add_argument("--out", default=None, help=f"checkpoint folder to write (default: <run>/{verb})")
        p.add_argument(
            "--resume", default=None, help="'auto' continues an unfinished run in --out; or a folder"
        )
        if verb != "rl":
            p.add_argument(
                "--data",
                action="append",
                default=[],
                metavar="FILE[:WEIGHT]",
                help="JSONL, Parquet or saved HF dataset (repeatable); WEIGHT = passes over it, e.g. 0.5",
            )
            p.add_argument(
                "--val-data", default=None, help="held-out data file (default: built-in held-out items)"
            )
            p.add_argument(
                "--synthetic",
                type=int,
                default=-1,
                help="built-in examples to mix in (default: all the preset's when no --data, else 0)",
            )
            p.add_argument("--skip-bad", action="store_true", help="skip and count bad or too long lines")
        if verb == "sft":
            p.add_argument(
                "--tokens", type=int, default=0, help="token budget: steps = tokens / (batch x seq_len)"
            )
        if verb == "rl":
            p.add_argument("--rm", default=None, help="reward model folder (used when rl.rm_weight > 0)")
            p.add_argument(
                "--data", default=None, help="task file (docs/tasks.md); default: the built-in task mixture"
            )
            p.add_argument("--val-data", default=None, help="held-out task file (default: ~15%% of --data)")
        if verb in ("dpo", "rl"):
            p.add_argument(
                "--no-compare",
                action="store_true",
                help="skip the closing before/after evaluation on the run's tasks",
            )


def _words(run: Path) -> list[str]:
    p = run / "data" / "words.json"
    if p.is_file():
        return json.loads(p.read_text())
    from chatsmith.data.corpus.stdlib_corpus import stdlib_documents
    from chatsmith.tasks.common import word_list

    return word_list(stdlib_documents(1_000_000, 0))


def _init_dir(verb: str, run: Path, given: str | None) -> Path:
    if given:
        from chatsmith.common.paths import resolve_model

        g = Path(given)
        return g if (g / "model.safetensors").is_file() or (g / "adapter_config.json").is_file() else (
            resolve_model(given)
        )
    for stage in INIT[verb]:
        if (run / stage / "model.safetensors").is_file() or (run / stage / "adapter_config.json").is_file():
            return run / stage
    raise ChatsmithError(
        f"no {' or '.join(INIT[verb])} checkpoint in {run}; run the earlier stages first "
        f"(chatsmith speedrun) or pass --init DIR"
    )


def _file_mixture(specs: list[str], skip_bad: bool, seed: int, read: Any, skipped: Any) -> list[Any]:
    from chatsmith.data.chat.chat_jsonl import parse_source, weighted_mixture

    sources = []
    for spec in specs:
        path, weight = parse_source(spec)
        sources.append((read(path, skip_bad, skipped), weight))
    return weighted_mixture(sources, seed)


def _sft_data(cfg: Config, args: argparse.Namespace, run: Path, skipped: Any) -> tuple[list[Any], list[Any]]:
    from chatsmith.data.chat.chat_jsonl import read_conversations
    from chatsmith.tasks.mixture import mixture

    n_syn = args.synthetic if args.synthetic >= 0 else (0 if args.data else cfg.data.chat_train)
    train: list[Any] = _file_mixture(args.data, args.skip_bad, cfg.run.seed, read_conversations, skipped)
    words = _words(run) if n_syn or not args.val_data else []
    if n_syn:
        train += [e.messages for e in mixture(n_syn, cfg.run.seed + 1, "train", cfg.identity, words)]
        random.Random(cfg.run.seed).shuffle(train)
    if args.val_data:
        val: list[Any] = read_conversations(args.val_data, args.skip_bad, skipped)
    elif n_syn:
        val = [
            e.messages for e in mixture(cfg.data.chat_val, cfg.run.seed + 2, "heldout", cfg.identity, words)
        ]
    else:  # hold out 2 % of the file conversations
        val = [c for i, c in enumerate(train) if i % 50 == 0]
        train = [c for i, c in enumerate(train) if i % 50 != 0]
    if not train:
        raise ChatsmithError("no training conversations: pass --data FILE.jsonl or --synthetic N")
    return train, val


def _pref_data(
    cfg: Config, args: argparse.Namespace, run: Path, n_train: int, n_val: int, skipped: Any
) -> tuple[list[Any], list[Any]]:
    from chatsmith.data.chat.preferences import read_preferences
    from chatsmith.tasks.preference_pairs import preference_pairs

    n_syn = args.synthetic if args.synthetic >= 0 else (0 if args.data else n_train)
    train = _file_mixture(args.data, args.skip_bad, cfg.run.seed, read_preferences, skipped)
    words = _words(run) if n_syn or not (args.val_data or args.data) else []
    if n_syn:
        train += preference_pairs(n_syn, cfg.run.seed + 3, "train", cfg.identity, words)
        random.Random(cfg.run.seed).shuffle(train)
    if args.val_data:
        val = read_preferences(args.val_data, args.skip_bad, skipped)
    elif n_syn:
        val = preference_pairs(n_val, cfg.run.seed + 4, "heldout", cfg.identity, words)
    else:
        val, train = train[::50], [p for i, p in enumerate(train) if i % 50]
    if not train:
        raise ChatsmithError("no preference pairs: pass --data FILE.jsonl or --synthetic N")
    return train, val


def run_posttrain(args: argparse.Namespace, overrides: list[str]) -> int:
    from chatsmith.common.device import pick_device, pick_dtype, set_threads
    from chatsmith.data.chat.chat_jsonl import Skipped

    cfg = make_config(args.preset, overrides)
    if args.run:
        cfg.run.name = args.run
    set_threads(cfg.run.threads)
    device = pick_device(cfg.run.device)
    dtype = pick_dtype(cfg.run.dtype, device)
    run = run_dir(cfg.run.name)
    verb = args.verb
    init = _init_dir(verb, run, args.init)
    out = Path(args.out).expanduser() if args.out else run / verb
    metrics = MetricsLog(out.parent / "metrics.jsonl", verb)
    info(f"[{verb}] {init} -> {out}")
    ctx = _Verb(cfg, args, run, init, out, device, dtype, metrics, Skipped())
    result = {"sft": _sft, "dpo": _pairs, "rm": _pairs, "rl": _rl}[verb](ctx)
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str, dict))}
    if is_main_process():
        (out.parent / f"{verb}_summary.json").write_text(json.dumps(summary, indent=1))
    info(json.dumps(summary))
    if verb in ("dpo", "rl") and not args.no_compare:
        from chatsmith.eval.report_compare import before_after

        before_after(run, init, out, device, dtype, (init.name, out.name))
    return 0


@dataclass
class _Verb:
    """What every post-training verb starts from: the config, the folders and the shared counters."""

    cfg: Config
    args: argparse.Namespace
    run: Path  # the run's folder
    init: Path  # the checkpoint to start from
    out: Path  # the checkpoint folder to write
    device: Any
    dtype: Any
    metrics: MetricsLog
    skipped: Any  # chat_jsonl.Skipped: bad or too-long lines left out of the data files


def _sft(v: _Verb) -> dict[str, Any]:
    from chatsmith.train.sft import run_sft

    args = v.args
    train, val = _sft_data(v.cfg, args, v.run, v.skipped)
    v.skipped.report("sft")
    cfg, device, dtype = v.cfg, v.device, v.dtype
    result = run_sft(
        cfg, v.init, v.out, train, val, device, dtype, v.metrics, args.skip_bad, args.tokens, args.resume
    )
    result["skipped_lines"] = v.skipped.total
    return result


def _pairs(v: _Verb) -> dict[str, Any]:
    """dpo or rm: both train on preference pairs."""
    verb, cfg, args = v.args.verb, v.cfg, v.args
    sc = cfg.dpo if verb == "dpo" else cfg.rm
    train_p, val_p = _pref_data(cfg, args, v.run, sc.train_pairs, sc.val_pairs, v.skipped)
    v.skipped.report(verb)
    if verb == "dpo":
        from chatsmith.train.dpo import run_dpo as run_stage
    else:
        from chatsmith.train.rm import run_rm as run_stage
    result = run_stage(
        cfg, v.init, v.out, train_p, val_p, v.device, v.dtype, v.metrics, args.skip_bad, args.resume
    )
    result["skipped_lines"] = v.skipped.total
    return result


def _rl(v: _Verb) -> dict[str, Any]:
    from chatsmith.train.rl import run_rl
    from chatsmith.train.rl_data import rl_data

    cfg, args, run = v.cfg, v.args, v.run
    train, val, task = rl_data(cfg, args.data, args.val_data, None if args.data else _words(run))
    rm = Path(args.rm) if args.rm else (run / "rm" if (run / "rm").is_dir() else None)
    return run_rl(cfg, v.init, v.out, train, val, task, v.device, v.dtype, v.metrics, rm, resume=args.resume)


__all__ = ["VERBS", "add_posttrain_parsers", "run_posttrain"]
