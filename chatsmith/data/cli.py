"""`chatsmith data ...` and `chatsmith bench data`: the data pipeline from the command line.

The pipeline, one verb per stage (each reads the previous stage's folder):

    chatsmith data fineweb --shards 2 --out raw/                    # optional: FineWeb-Edu parquet shards
    chatsmith data ingest raw/ notes.txt https://host/x.parquet --out docs/ [--text-field text] [--skip-bad]
    chatsmith data clean --in docs/ --out clean/                   # writes clean/clean_report.json
    chatsmith data dedup --in clean/ --out dedup/                  # writes dedup/dedup_report.json
    chatsmith data tokenize --tokenizer tok/tokenizer.json --in dedup/ --out tokens/ [--workers 2]
    chatsmith data stats tokens/                                   # stats.json + length_hist.png

or all of it at once: `chatsmith data prepare SRC... --tokenizer PATH --out DIR` (DIR/docs, clean, dedup,
tokens). Thresholds: `--set KEY=VALUE` (space-separated), e.g. `--set rules.min_words=20` for clean,
`--set threshold=0.8` for dedup; keys are the fields of CleanConfig/QualityConfig and DedupConfig.
The token folder (shards, manifest.json and a copy of tokenizer.json) is what
`chatsmith pretrain --data.tokens DIR` streams (`tokens/stream.BOSAlignedLoader`).

Wiring (chatsmith/cli.py): `add_data_parser(sub)` in build_parser, `run_data(args)` for the `data`
verb, `bench_data_main(argv)` for `chatsmith bench data`. User mistakes print one line and return 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from chatsmith.common.errors import ChatsmithError, print_error


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a threshold of the stage's config (repeatable)",
    )


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `data` verb and its sub-verbs on an argparse subparsers object."""
    d = subparsers.add_parser("data", help="ingest, clean, deduplicate, tokenize and inspect corpora")
    sub = d.add_subparsers(dest="data_verb", required=True)

    def ingest_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "src", nargs="+", help=".txt/.md/.jsonl/.parquet files, folders, HF datasets, http(s) URLs"
        )
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--text-field", default="text", help="JSONL field / parquet column holding the text")
        p.add_argument(
            "--skip-bad", action="store_true", help="skip (and count) unreadable files instead of failing"
        )
        p.add_argument(
            "--sha256", nargs="+", default=None, help="one digest per URL, in the order of the URLs"
        )

    ingest_flags(sub.add_parser("ingest", help="raw inputs -> document shards (parquet: text, source, id)"))

    f = sub.add_parser("fineweb", help="download FineWeb-Edu parquet shards (resumable)")
    f.add_argument("--shards", type=int, required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--base-url", default=None, help="a mirror of the shards (default: the Hugging Face hub)")
    f.add_argument("--layout", default="sample-10BT", help="sample-10BT or nanochat")
    f.add_argument("--start", type=int, default=0, help="index of the first shard")

    c = sub.add_parser("clean", help="normalize, strip boilerplate, apply Gopher quality rules")
    c.add_argument("--in", dest="inp", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--workers", type=int, default=1)
    _add_set(c)

    u = sub.add_parser("dedup", help="remove exact and near (MinHash LSH) duplicates")
    u.add_argument("--in", dest="inp", required=True)
    u.add_argument("--out", required=True)
    _add_set(u)

    t = sub.add_parser("tokenize", help="document shards -> token shards + manifest (resumable)")
    t.add_argument("--tokenizer", required=True, help="tokenizer.json or its folder")
    t.add_argument("--in", dest="inp", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--workers", type=int, default=2)

    s = sub.add_parser("stats", help="documents, tokens, bytes/token, language mix, length histogram")
    s.add_argument("dir")
    s.add_argument("--out", default=None, help="where stats.json and length_hist.png go (default: DIR)")

    p = sub.add_parser("prepare", help="ingest -> clean -> dedup -> tokenize -> stats in one go")
    ingest_flags(p)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clean-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dedup-set", action="append", default=[], metavar="KEY=VALUE")
    d.set_defaults(func=run_data)
    return d


def apply_sets(cfg: Any, sets: list[str]) -> Any:
    """Apply `a.b=value` overrides to a (nested) config dataclass, typed by the field's annotation."""
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ChatsmithError(f"--set {item!r}: expected KEY=VALUE")
        obj, parts = cfg, key.split(".")
        for part in parts[:-1]:
            obj = getattr(obj, part, None)
            if not dataclasses.is_dataclass(obj):
                raise ChatsmithError(f"--set {key}: no section '{part}'")
        fields = {f.name: f for f in dataclasses.fields(obj)}
        name = parts[-1]
        if name not in fields:
            raise ChatsmithError(f"--set {key}: unknown key; known: {', '.join(sorted(fields))}")
        current = getattr(obj, name)
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("true", "1")
            elif isinstance(current, tuple):
                value = tuple(float(x) for x in raw.split(","))
            else:
                value = type(current)(raw)
        except ValueError:
            hint = typing.get_type_hints(type(obj)).get(name, type(current))
            raise ChatsmithError(f"--set {key}={raw}: expected {getattr(hint, '__name__', hint)}") from None
        setattr(obj, name, value)
    return cfg


def _clean_cfg(sets: list[str]) -> Any:
    from chatsmith.data.corpus.clean import CleanConfig

    return apply_sets(CleanConfig(), sets)


def _dedup_cfg(sets: list[str]) -> Any:
    from chatsmith.data.corpus.dedup import DedupConfig

    return apply_sets(DedupConfig(), sets)


def _run(args: argparse.Namespace) -> int:
    v = args.data_verb
    if v == "ingest":
        from chatsmith.data.corpus.ingest import ingest

        ingest(args.src, Path(args.out), args.text_field, args.skip_bad, args.sha256)
    elif v == "fineweb":
        from chatsmith.data.corpus.fineweb import download_fineweb

        paths = download_fineweb(args.shards, Path(args.out), args.base_url, args.layout, args.start)
        print(
            f"downloaded {len(paths)} shards to {args.out}; next: chatsmith data ingest {args.out} --out DOCS"
        )
    elif v == "clean":
        from chatsmith.data.corpus.clean import clean_dir

        clean_dir(Path(args.inp), Path(args.out), _clean_cfg(args.set), args.workers)
    elif v == "dedup":
        from chatsmith.data.corpus.dedup import dedup_dir

        dedup_dir(Path(args.inp), Path(args.out), _dedup_cfg(args.set))
    elif v == "tokenize":
        from chatsmith.data.tokens.tokenize_shards import tokenize_dir

        tokenize_dir(args.tokenizer, Path(args.inp), Path(args.out), args.workers)
    elif v == "stats":
        from chatsmith.data.stats import corpus_stats

        corpus_stats(args.dir, Path(args.out) if args.out else None)
    elif v == "prepare":
        from chatsmith.data.corpus.clean import clean_dir
        from chatsmith.data.corpus.dedup import dedup_dir
        from chatsmith.data.corpus.ingest import ingest
        from chatsmith.data.stats import corpus_stats
        from chatsmith.data.tokens.tokenize_shards import tokenize_dir

        out = Path(args.out)
        clean_cfg, dedup_cfg = _clean_cfg(args.clean_set), _dedup_cfg(args.dedup_set)  # check before working
        ingest(
            args.src,
            out / "docs",
            args.text_field,
            args.skip_bad,
            args.sha256,
            download_dir=out / "downloads",
        )
        clean_dir(out / "docs", out / "clean", clean_cfg)
        dedup_dir(out / "clean", out / "dedup", dedup_cfg)
        tokenize_dir(args.tokenizer, out / "dedup", out / "tokens", args.workers)
        corpus_stats(out / "tokens")
    else:  # pragma: no cover - argparse rejects unknown sub-verbs
        raise ChatsmithError(f"unknown data command {v}")
    return 0


def run_data(args: argparse.Namespace) -> int:
    """Run a parsed `chatsmith data ...` command; a ChatsmithError prints one line and returns 2."""
    try:
        return _run(args)
    except ChatsmithError as e:
        return print_error(e)
    except KeyboardInterrupt:
        print("chatsmith: interrupted", file=sys.stderr)
        return 130


def bench_data_main(argv: list[str]) -> int:
    """`chatsmith bench data [--mb 16] [--workers 2] [--tokenizer PATH]`: prints JSON on the last line."""
    p = argparse.ArgumentParser(prog="chatsmith bench data", description="data pipeline throughput")
    p.add_argument(
        "--mb", type=float, default=16.0, help="megabytes of text (Python stdlib docstrings; ~4.7 MB at most)"
    )
    p.add_argument("--workers", type=int, default=2, help="tokenization processes")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer.json to use (default: train one on the corpus)"
    )
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    try:
        from chatsmith.data.bench import bench_data

        result = bench_data(args.mb, args.workers, args.tokenizer, args.vocab_size, args.repeats)
    except ChatsmithError as e:
        return print_error(e)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m chatsmith.data.cli ...` (the same as `chatsmith data ...`)."""
    parser = argparse.ArgumentParser(prog="chatsmith")
    add_data_parser(parser.add_subparsers(dest="verb", required=True))
    return run_data(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
