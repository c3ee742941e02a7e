"""The `chatsmith` command. Each verb registers its flags and its handler
(argparse's `set_defaults(func=...)`); `main` parses and calls the handler, which calls one
layer below and returns the exit code.

The verbs of a package register in that package (`add_*_parser` in bench/cli.py, data/cli.py,
eval/cli.py, train/posttrain_cli.py, serve/cli.py); the others are here, one pair of functions
each. `--section.key=value` config overrides reach `args.overrides`; verbs that do not set
`takes_overrides` refuse them. Torch-heavy modules load inside the handlers, so `--help` is quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chatsmith.common.config import available_presets, make_config
from chatsmith.common.cpu_share import pin_from_env
from chatsmith.common.errors import ChatsmithError, print_error
from chatsmith.common.paths import resolve_model
from chatsmith.engine.memory import add_memory_flags, add_threads_flag, add_weights_flag


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """`--section.key=value` arguments are config overrides; the rest go to argparse."""
    over = [a for a in argv if a.startswith("--") and "." in a.split("=", 1)[0]]
    return [a for a in argv if a not in over], over


def self_command() -> str:
    """How the user invoked us, so printed hints can be pasted back as they are."""
    argv0 = sys.argv[0] if sys.argv else "chatsmith"
    if argv0.endswith("__main__.py") or not argv0:
        return f"{Path(sys.executable).name} -m chatsmith"
    return argv0


def _add_preset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", default="demo", help=f"one of: {', '.join(available_presets())}, or a .toml path"
    )


def _add_speedrun(sub: Any) -> None:
    s = sub.add_parser("speedrun", help="data -> tokenizer -> pretrain -> sft -> eval -> report")
    _add_preset(s)
    s.add_argument("--resume", default=None, help="auto: continue the run's unfinished stages")
    s.set_defaults(func=_run_speedrun, takes_overrides=True)


def _run_speedrun(args: argparse.Namespace) -> int:
    from chatsmith.train.speedrun import speedrun

    out = speedrun(make_config(args.preset, args.overrides), resume=args.resume)
    me = self_command()
    print(
        f"\nDone. Report: {out / 'report.md'}\nChat with your model:\n  {me} chat --model {out}\n"
        f'  {me} chat --model {out} -p "What is 37 * 41?" --verbose'
    )
    return 0


def _add_pretrain(sub: Any) -> None:
    pt = sub.add_parser(
        "pretrain", help="pretrain a base model (data and tokenizer first if the run has none)"
    )
    _add_preset(pt)
    pt.add_argument(
        "--resume", default=None, help="auto (the run's latest checkpoint) or a checkpoint folder"
    )
    pt.set_defaults(func=_run_pretrain, takes_overrides=True)


def _run_pretrain(args: argparse.Namespace) -> int:
    from chatsmith.common.log import info
    from chatsmith.train.speedrun import pretrain_only

    out = pretrain_only(make_config(args.preset, args.overrides), resume=args.resume)
    info(f"\nDone. Base model: {out / 'base'}")
    return 0


def _add_tokenizer(sub: Any) -> None:
    t = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your text")
    tsub = t.add_subparsers(dest="action", required=True)
    tt = tsub.add_parser(
        "train",
        help="train on text files, folders, JSONL, parquet or a saved HF dataset and write tokenizer.json; "
        "streams at most --tokenizer.train_mb of text",
    )
    tt.add_argument("--input", required=True, nargs="+", help="files or folders (what data ingest reads)")
    tt.add_argument("--text-field", default="text", help="JSONL field / parquet column holding the text")
    tt.add_argument("--vocab-size", type=int, default=None, help="default: tokenizer.vocab_size")
    tt.add_argument("--preset", default=None, help="a preset for tokenizer.vocab_size and tokenizer.train_mb")
    tt.add_argument("--skip-bad", action="store_true", help="skip unreadable files and records")
    tt.add_argument("--out", required=True, help="where to write tokenizer.json")
    tt.set_defaults(func=_run_tokenizer_train, takes_overrides=True)


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    from chatsmith.common.log import progress
    from chatsmith.data.corpus.texts import batched, iter_texts
    from chatsmith.tokenizer.bpe import BPETokenizer

    cfg = make_config(args.preset, args.overrides).tokenizer
    budget = int(cfg.train_mb * 1e6)
    counted = {"docs": 0, "bytes": 0}

    def texts() -> Any:  # counts what the trainer read, as it reads
        for text in iter_texts(args.input, args.text_field, budget, args.skip_bad):
            counted["docs"] += 1
            counted["bytes"] += len(text.encode("utf-8", "surrogatepass"))
            yield text

    batches = progress(batched(texts()), desc=f"tokenizer ({cfg.train_mb:g} MB at most)")
    tok = BPETokenizer.train(batches, args.vocab_size or cfg.vocab_size)
    out_path = Path(args.out)
    tok.save(out_path / "tokenizer.json" if out_path.suffix != ".json" else out_path)
    print(
        f"tokenizer: vocab {tok.vocab_size}, fingerprint {tok.fingerprint()}, "
        f"{counted['docs']} documents ({counted['bytes'] / 1e6:.2f} MB) -> {out_path}"
    )
    return 0


def _add_export(sub: Any) -> None:
    e = sub.add_parser("export", help="export a checkpoint to the Hugging Face format or a GGUF file")
    e.add_argument("--model", required=True, help="checkpoint folder or run name")
    e.add_argument("--to", default="hf", help="target format: hf (a folder) or gguf (a file)")
    e.add_argument("--type", default="f16", help="GGUF weight type: f16, bf16 or q8_0 (default f16)")
    e.add_argument(
        "--merge-lora", action="store_true", help="export a LoRA adapter merged into its base"
    )
    e.add_argument(
        "--adapter", default="", help="with --merge-lora: a PEFT LoRA adapter folder for --model to merge"
    )
    e.add_argument("out", help="output folder (hf) or file (gguf)")
    e.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from chatsmith.interop import export_main

    if args.merge_lora or args.adapter:
        from chatsmith.interop.peft_adapter import export_merged

        if not args.merge_lora:
            raise ChatsmithError("--adapter is merged into the export: add --merge-lora")
        export_merged(str(resolve_model(args.model)), args.adapter, args.to, args.out, args.type)
        return 0
    export_main(str(resolve_model(args.model)), args.to, args.out, gguf_type=args.type)
    return 0


def _add_import(sub: Any) -> None:
    i = sub.add_parser("import", help="import a local Hugging Face or GGUF Qwen2/Qwen3/Llama model")
    i.add_argument("src", help="folder with config.json, safetensors and tokenizer.json, or a .gguf file")
    i.add_argument("--out", required=True, help="chatsmith checkpoint folder to write")
    i.add_argument(
        "--add-tool-tokens",
        action="store_true",
        help="add chatsmith's tool tags as tokens if the model has none",
    )
    i.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from chatsmith.interop import import_main

    import_main(args.src, args.out, args.add_tool_tokens)
    return 0


def _add_chat(sub: Any) -> None:
    c = sub.add_parser("chat", help="chat in the terminal (or answer one prompt with -p)")
    c.add_argument("--model", default="demo", help="checkpoint folder, or a run name (default: demo)")
    c.add_argument("-p", "--prompt", default=None, help="answer this one prompt and exit")
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--top-k", type=int, default=0)
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--max-tokens", type=int, default=256)
    c.add_argument("--system", default=None, help="a system prompt")
    c.add_argument("--device", default="auto")
    c.add_argument("-v", "--verbose", action="store_true", help="show tool calls and their results")
    c.add_argument(
        "--compile",
        choices=["on", "off"],
        nargs="?",
        const="on",
        default="on",
        help="decode through compiled graphs, as serve does (compiled once, then cached on disk)",
    )
    c.add_argument("--dtype", default="auto", help="auto (bf16 where fast, as serve), float32, bfloat16")
    add_memory_flags(c)
    add_weights_flag(c)
    add_threads_flag(c)
    c.set_defaults(func=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    from chatsmith.chat_cli import chat_main

    return chat_main(
        resolve_model(args.model),
        args.prompt,
        args.temperature,
        args.top_k,
        args.top_p,
        args.max_tokens,
        args.system,
        args.verbose,
        args.device,
        args.compile == "on",
        dtype=args.dtype,
        kv_budget=args.kv_budget,
        max_context=args.max_context,
        threads=args.threads,
        weights=args.weights,
    )


def build_parser() -> argparse.ArgumentParser:
    """Every verb, in the order `chatsmith --help` lists them, each with its handler as `func`."""
    from chatsmith.bench.cli import add_bench_parser
    from chatsmith.data.cli import add_data_parser
    from chatsmith.eval.cli import add_eval_parser
    from chatsmith.serve.cli import add_serve_parser
    from chatsmith.train.posttrain_cli import add_posttrain_parsers

    p = argparse.ArgumentParser(prog="chatsmith", description="Own a ChatGPT end to end.")
    sub = p.add_subparsers(dest="verb", required=True)
    for register in (
        _add_speedrun,
        _add_pretrain,
        _add_tokenizer,
        _add_export,
        _add_import,
        add_bench_parser,
        add_data_parser,
        add_eval_parser,  # eval and report
        add_posttrain_parsers,  # sft, dpo, rm, rl
        add_serve_parser,  # serve and keys
        _add_chat,
    ):
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pin_from_env()  # OpenMP reads its binding once, when torch first starts it
    args_list, overrides = _split_overrides(argv)
    args = build_parser().parse_args(args_list)
    args.overrides = overrides
    try:
        if overrides and not getattr(args, "takes_overrides", False):
            raise ChatsmithError(f"'{args.verb}' takes no config overrides (got {' '.join(overrides)})")
        return args.func(args)
    except ChatsmithError as e:
        return print_error(e)
    except KeyboardInterrupt:
        print("chatsmith: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
