"""`chatsmith chat`: a terminal chat that streams tokens and runs the built-in tools.

It takes serve's fast path by default: bf16 weights where the CPU is fast at them and the
decode step compiled (engine/decode.py; graphs cached on disk, so a second start is quick).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from chatsmith import kernels
from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.device import pick_device, pick_dtype, set_threads
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tokenizer.chat_format import encode_prompt

HELP = "commands: /clear (new conversation), /temp X, /system TEXT, /help, /quit"


def respond(
    gen: Generator, messages: list[dict[str, Any]], params: SamplingParams, out: TextIO, verbose: bool = False
) -> str:
    """Stream one assistant answer to `out`; returns the visible answer text."""
    answer: list[str] = []
    for ev in gen.stream(encode_prompt(gen.tok, messages), params):
        if ev.kind in ("token", "done") and ev.text:
            answer.append(ev.text)
            out.write(ev.text)
            out.flush()
        if ev.kind == "tool_call" and verbose:
            call = ev.data.get("error") or json.dumps(ev.data, ensure_ascii=False)
            out.write(f"\n[tool call] {call}\n")
        elif ev.kind == "tool_result":
            if verbose:
                out.write(f"[tool result] {ev.text}\n")
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
    compile: bool = True,
    dtype: str = "auto",
    kv_budget: str | None = None,
    max_context: int | None = None,
    weights: str = "bf16",
    threads: int = 0,
) -> int:
    t0 = time.perf_counter()
    dev = pick_device(device)
    set_threads(threads)
    model, tok, meta = load_checkpoint(model_path, dev)
    model = model.to(chat_dtype(dtype, dev, compile)).eval()
    kernels.set_weights(model, weights)
    gen = Generator(model, tok, compile=compile, kv_budget=kv_budget, max_len=max_context)
    dt = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    how = f"{'compiled' if compile else 'eager'}, {dt}"
    # On stderr: with -p, stdout carries the answer alone.
    print(f"ready in {time.perf_counter() - t0:.1f} s ({how})", file=sys.stderr, flush=True)
    params = SamplingParams(
        temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_tokens
    ).validate()
    base: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        respond(gen, [*base, {"role": "user", "content": prompt}], params, sys.stdout, verbose)
        return 0
    stage, step = meta.get("stage", "?"), meta.get("step", "?")
    print(f"chatsmith chat — model {model_path} ({stage}, step {step}). {HELP}")
    return _repl(gen, params, base, verbose)


def chat_dtype(name: str, device: torch.device, compile: bool) -> torch.dtype:
    """The weights' dtype: as named, or for "auto" what serve picks (bf16 where the device is
    fast at it; float32 for eager decoding on CPUs, where ATen's bf16 path is slower)."""
    if name == "auto" and device.type == "cpu" and not compile:
        return torch.float32
    return pick_dtype(name, device)


def _repl(gen: Generator, params: SamplingParams, base: list[dict[str, Any]], verbose: bool) -> int:
    """The interactive loop: a line is a user turn or a /command; EOF or /quit ends it."""
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
            state = _command(line, base, messages, params)
            if state is None:
                return 0
            base, messages = state
            continue
        messages.append({"role": "user", "content": line})
        print("chatsmith> ", end="", flush=True)
        answer = respond(gen, messages, params, sys.stdout, verbose)
        messages.append({"role": "assistant", "content": answer})


def _command(
    line: str, base: list[dict[str, Any]], messages: list[dict[str, Any]], params: SamplingParams
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """Run one /command; the (system turns, conversation) after it, or None to quit."""
    cmd, _, arg = line.partition(" ")
    if cmd in ("/quit", "/exit"):
        return None
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
    return base, messages
