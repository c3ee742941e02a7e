"""The `chatsmith` command. Each verb parses its flags and calls one layer below."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatsmith.common.config import available_presets, make_config
from chatsmith.common.errors import ChatsmithError, print_error
from chatsmith.common.paths import resolve_model


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatsmith", description="Own a ChatGPT end to end.")
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("speedrun", help="data -> tokenizer -> pretrain -> sft -> eval -> report")
    s.add_argument(
        "--preset", default="demo", help=f"one of: {', '.join(available_presets())}, or a .toml path"
    )
    s.add_argument("--resume", default=None, help="auto: continue the run's unfinished stages")

    pt = sub.add_parser(
        "pretrain", help="pretrain a base model (data and tokenizer first if the run has none)"
    )
    pt.add_argument(
        "--preset", default="demo", help=f"one of: {', '.join(available_presets())}, or a .toml path"
    )
    pt.add_argument(
        "--resume", default=None, help="auto (the run's latest checkpoint) or a checkpoint folder"
    )

    t = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your text")
    tsub = t.add_subparsers(dest="action", required=True)
    tt = tsub.add_parser("train", help="train on .txt/.md/.jsonl files and write tokenizer.json")
    tt.add_argument("--input", required=True, help="a file or folder of .txt/.md/.jsonl")
    tt.add_argument("--vocab-size", type=int, default=4096)
    tt.add_argument("--out", required=True, help="where to write tokenizer.json")

    e = sub.add_parser("export", help="export a checkpoint to the Hugging Face format")
    e.add_argument("--model", required=True, help="checkpoint folder or run name")
    e.add_argument("--to", default="hf", help="target format (hf)")
    e.add_argument("out", help="output folder")
    i = sub.add_parser("import", help="import a local Hugging Face Qwen2/Qwen3/Llama checkpoint")
    i.add_argument("src", help="folder with config.json, safetensors and tokenizer.json")
    i.add_argument("--out", required=True, help="chatsmith checkpoint folder to write")

    b = sub.add_parser("bench", help="speed measurements; JSON on the last line")
    b.add_argument("what", choices=["data", "generate", "train", "peak"], help="what to measure")
    b.add_argument("rest", nargs=argparse.REMAINDER)

    from chatsmith.data.cli import add_data_parser

    add_data_parser(sub)

    from chatsmith.eval.cli import add_eval_parser

    add_eval_parser(sub)
    from chatsmith.train.posttrain_cli import add_posttrain_parsers

    add_posttrain_parsers(sub)
    from chatsmith.serve.cli import add_serve_parser

    add_serve_parser(sub)

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
        "--compile", action="store_true", help="compile the decode step first (faster replies after a wait)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args_list, overrides = _split_overrides(argv)
    args = build_parser().parse_args(args_list)
    try:
        if args.verb == "speedrun":
            from chatsmith.train.speedrun import speedrun

            cfg = make_config(args.preset, overrides)
            out = speedrun(cfg, resume=args.resume)
            me = self_command()
            print(
                f"\nDone. Report: {out / 'report.md'}\nChat with your model:\n  {me} chat --model {out}\n"
                f'  {me} chat --model {out} -p "What is 37 * 41?" --verbose'
            )
            return 0
        if args.verb == "pretrain":
            from chatsmith.common.log import info
            from chatsmith.train.speedrun import pretrain_only

            out = pretrain_only(make_config(args.preset, overrides), resume=args.resume)
            info(f"\nDone. Base model: {out / 'base'}")
            return 0
        if args.verb in ("sft", "dpo", "rm", "rl"):
            from chatsmith.train.posttrain_cli import run_posttrain

            return run_posttrain(args, overrides)
        if overrides:
            raise ChatsmithError(f"'{args.verb}' takes no config overrides (got {' '.join(overrides)})")
        if args.verb == "tokenizer":
            from chatsmith.data.text_files import read_documents
            from chatsmith.tokenizer.bpe import BPETokenizer

            docs = read_documents(args.input)
            tok = BPETokenizer.train(docs, args.vocab_size)
            out_path = Path(args.out)
            tok.save(out_path / "tokenizer.json" if out_path.suffix != ".json" else out_path)
            print(
                f"tokenizer: vocab {tok.vocab_size}, fingerprint {tok.fingerprint()}, "
                f"{len(docs)} documents -> {out_path}"
            )
            return 0
        if args.verb in ("serve", "keys"):
            from chatsmith.serve.cli import run_serve

            return run_serve(args)
        if args.verb == "data":
            from chatsmith.data.cli import run_data

            return run_data(args)
        if args.verb in ("eval", "report"):
            from chatsmith.eval.cli import run_eval

            return run_eval(args)
        if args.verb == "bench" and args.what == "generate":
            from chatsmith.bench.generate import bench_generate_main

            rest = list(args.rest)
            if "--model" in rest[:-1]:  # accept a run name as chat does
                i = rest.index("--model") + 1
                rest[i] = str(resolve_model(rest[i]))
            return bench_generate_main(rest)
        if args.verb == "bench" and args.what == "train":
            from chatsmith.bench.train import bench_train_main

            return bench_train_main(list(args.rest))
        if args.verb == "bench" and args.what == "peak":
            from chatsmith.bench.peak import bench_peak_main

            return bench_peak_main(list(args.rest))
        if args.verb == "bench":
            from chatsmith.data.cli import bench_data_main

            return bench_data_main(args.rest)
        if args.verb == "export":
            from chatsmith.interop import export_main

            export_main(str(resolve_model(args.model)), args.to, args.out)
            return 0
        if args.verb == "import":
            from chatsmith.interop import import_main

            import_main(args.src, args.out)
            return 0
        if args.verb == "chat":
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
                args.compile,
            )
    except ChatsmithError as e:
        return print_error(e)
    except KeyboardInterrupt:
        print("chatsmith: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
