"""The `chatsmith` command. Each verb parses its flags and calls one layer below."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatsmith.common.config import available_presets, make_config
from chatsmith.common.errors import ChatsmithError
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
    s.add_argument("--preset", default="demo", help=f"one of: {', '.join(available_presets())}, or a .toml path")

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
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args_list, overrides = _split_overrides(argv)
    args = build_parser().parse_args(args_list)
    try:
        if args.verb == "speedrun":
            from chatsmith.train.speedrun import speedrun

            cfg = make_config(args.preset, overrides)
            out = speedrun(cfg)
            me = self_command()
            print(f"\nDone. Report: {out / 'report.md'}\nChat with your model:\n  {me} chat --model {out}\n"
                  f"  {me} chat --model {out} -p \"What is 37 * 41?\" --verbose")
            return 0
        if overrides:
            raise ChatsmithError(f"'{args.verb}' takes no config overrides (got {' '.join(overrides)})")
        if args.verb == "chat":
            from chatsmith.chat_cli import chat_main

            return chat_main(resolve_model(args.model), args.prompt, args.temperature, args.top_k, args.top_p,
                             args.max_tokens, args.system, args.verbose, args.device)
    except ChatsmithError as e:
        print(f"chatsmith: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chatsmith: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
