"""`chatsmith chat`: a terminal chat that streams tokens and runs the built-in tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.device import pick_device
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tokenizer.chat_format import encode_prompt
from chatsmith.tokenizer.special import TOOL_CALL, TOOL_CALL_END

HELP = "commands: /clear (new conversation), /temp X, /system TEXT, /help, /quit"


class TextStream:
    """Turns a stream of token ids into printable text, holding back split UTF-8 bytes."""

    def __init__(self, gen: Generator) -> None:
        self.gen, self.ids, self.shown = gen, [], 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.gen.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.shown = text[self.shown :], len(text)
        return new

    def reset(self) -> None:
        self.ids, self.shown = [], 0


def respond(
    gen: Generator, messages: list[dict[str, Any]], params: SamplingParams, out: TextIO, verbose: bool = False
) -> str:
    """Stream one assistant answer to `out`; returns the visible answer text."""
    stream, in_call, answer = TextStream(gen), False, []
    call_text: list[int] = []
    for ev in gen.stream(encode_prompt(gen.tok, messages), params):
        if ev.kind == "token":
            tok = gen.tok.id_to_token(ev.token)
            if ev.token == gen.tok.im_end_id:
                continue
            if tok == TOOL_CALL:
                in_call, call_text = True, []
                continue
            if tok == TOOL_CALL_END:
                in_call = False
                continue
            if in_call:
                call_text.append(ev.token)
                continue
            piece = stream.push(ev.token)
            answer.append(piece)
            out.write(piece)
            out.flush()
        elif ev.kind == "tool_call" and verbose:
            out.write(f"\n[tool call] {gen.tok.decode(call_text).strip()}\n")
        elif ev.kind == "tool_result":
            if verbose:
                out.write(f"[tool result] {ev.text}\n")
            stream.reset()
            answer = []
        elif ev.kind == "done" and ev.data.get("finish_reason") == "length" and verbose:
            out.write("\n[stopped: token limit]")
    out.write("\n")
    return "".join(answer).strip()


def chat_main(
    model_path: Path,
    prompt: str | None,
    temperature: float,
    top_k: int,
    top_p: float,
    max_tokens: int,
    system: str | None,
    verbose: bool,
    device: str = "auto",
) -> int:
    model, tok, meta = load_checkpoint(model_path, pick_device(device))
    gen = Generator(model, tok)
    params = SamplingParams(
        temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_tokens
    ).validate()
    base: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        respond(gen, [*base, {"role": "user", "content": prompt}], params, sys.stdout, verbose)
        return 0
    stage, step = meta.get("stage", "?"), meta.get("step", "?")
    print(f"chatsmith chat — model {model_path} ({stage}, step {step}). {HELP}")
    messages = list(base)
    while True:
        try:
            line = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            if cmd in ("/quit", "/exit"):
                return 0
            if cmd == "/clear":
                messages = list(base)
                print("(new conversation)")
            elif cmd == "/temp":
                try:
                    params.temperature = float(arg)
                    params.validate()
                    print(f"(temperature {params.temperature})")
                except (ValueError, ChatsmithError) as e:
                    print(f"(bad temperature: {e})")
            elif cmd == "/system":
                base = [{"role": "system", "content": arg}] if arg else []
                messages = list(base)
                print("(system prompt set; new conversation)" if arg else "(system prompt cleared)")
            else:
                print(HELP)
            continue
        messages.append({"role": "user", "content": line})
        print("chatsmith> ", end="", flush=True)
        answer = respond(gen, messages, params, sys.stdout, verbose)
        messages.append({"role": "assistant", "content": answer})
