"""`chatsmith bench generate`: batch-1 generation speed, chatsmith's engine against transformers.

Both sides run the same weights: the checkpoint is exported with chatsmith's own exporter
into a temporary folder and loaded with `AutoModelForCausalLM`. Both decode greedily from
the same prompt and produce exactly `--new-tokens` tokens (neither stops at `<|im_end|>`).

chatsmith: the engine's own `Generator.stream` with `ignore_eos`, tools off. TTFT is
cache allocation + prefill + first token; the decode rate covers the remaining N-1
tokens of the same run.

transformers: `generate(max_new_tokens=N, min_new_tokens=N, do_sample=False,
use_cache=True)`, timed whole; TTFT is a run with N=1; decode tokens/s =
(N-1) / (total - TTFT).

Each side is warmed up once; each figure is the best of `--repeats` runs. With
`--dtype bfloat16` chatsmith runs as its engine does (float32 weights under bf16
autocast, as `speedrun`'s Generator), transformers with bf16 weights (as it is normally
run); `tokens_match` is always checked in float32, on the first 16 tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.device import autocast, pick_device
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.interop import export_hf
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt

NOTE = "batch-1 only; concurrent (8/32) throughput arrives with the continuous-batching engine"
MATCH_TOKENS = 16  # greedy tokens compared between the two, in float32
# Plain text that fills the user turn to the asked prompt length (no special tokens).
FILLER = (
    "The quick brown fox jumps over the lazy dog. A tokenizer turns text into numbers that a "
    "model can read, and the model predicts the next number. She sold sea shells by the sea "
    "shore in 2024; the weather today is sunny and the answer is 1517."
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_prompt(tok: BPETokenizer, n: int) -> list[int]:
    """n token ids: a user turn of plain text cut to fit, then the assistant header, as
    `encode_prompt` frames it; below the size of that frame, n tokens of plain text."""
    frame = encode_prompt(tok, [{"role": "user", "content": ""}])
    cut = frame.index(tok.im_end_id)  # the <|im_end|> closing the (empty) user turn
    head, tail = frame[:cut], frame[cut:]
    room = n - len(head) - len(tail)
    text: list[int] = []
    k = 1
    while len(text) < max(room, n):
        text = tok.encode(" ".join([FILLER] * k))
        k *= 2
    return head + text[:room] + tail if room > 0 else text[:n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chatsmith_run(
    model: GPT, tok: BPETokenizer, prompt: list[int], n: int, amp: contextlib.AbstractContextManager | None
) -> tuple[float, float, list[int]]:
    """(TTFT s, seconds for the other n-1 tokens, the n tokens) of the engine's own stream."""
    gen = Generator(model, tok, amp)
    params = SamplingParams(temperature=0.0, max_new_tokens=n, ignore_eos=True)
    device = model.embed_tokens.weight.device
    out: list[int] = []
    _sync(device)
    t0 = t1 = time.perf_counter()
    for ev in gen.stream(prompt, params, run_tools=False):
        if ev.kind == "token":  # the token is on the host: sampling already waited for the device
            out.append(ev.token)
            if len(out) == 1:
                t1 = time.perf_counter()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def hf_run(hf: Any, x: torch.Tensor, n: int) -> tuple[float, list[int]]:
    """(seconds, the new tokens) of one transformers greedy generate of exactly n tokens."""
    mask = torch.ones_like(x)
    _sync(x.device)
    t0 = time.perf_counter()
    out = hf.generate(
        x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True
    )
    _sync(x.device)
    dt = time.perf_counter() - t0
    new = out[0, x.size(1) :].tolist()
    if len(new) != n:
        raise RuntimeError(f"transformers generated {len(new)} tokens, not {n}")
    return dt, new


def _load_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ChatsmithError("bench generate compares with transformers: pip install transformers") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


def bench_generate(
    model_path: str | Path,
    prompt_tokens: int = 64,
    new_tokens: int = 128,
    repeats: int = 3,
    device: str = "auto",
    dtype: str = "auto",
) -> dict[str, Any]:
    """Measure both engines on one checkpoint; the dict `bench_generate_main` prints."""
    if prompt_tokens < 1:
        raise ChatsmithError(f"--prompt-tokens must be >= 1, got {prompt_tokens}")
    if new_tokens < 2:
        raise ChatsmithError(
            f"--new-tokens must be >= 2 (the decode rate counts the tokens after the first), got {new_tokens}"
        )
    if repeats < 1:
        raise ChatsmithError(f"--repeats must be >= 1, got {repeats}")
    dev = pick_device(device)
    if dtype == "auto":
        dt = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    elif dtype in DTYPES:
        dt = DTYPES[dtype]
    else:
        raise ChatsmithError(f"unknown dtype '{dtype}'; choose auto, float32 or bfloat16")
    dtype_name = "bfloat16" if dt == torch.bfloat16 else "float32"

    model, tok, _ = load_checkpoint(Path(model_path), dev)
    positions = model.cfg.seq_len  # the context, and the exported max_position_embeddings
    if prompt_tokens + new_tokens > positions:
        raise ChatsmithError(
            f"--prompt-tokens + --new-tokens ({prompt_tokens + new_tokens}) exceed the model's context "
            f"({positions} tokens)"
        )
    transformers = _load_transformers()
    prompt = build_prompt(tok, prompt_tokens)
    x = torch.tensor([prompt], dtype=torch.long, device=dev)
    amp = autocast(dev, dt) if dt != torch.float32 else None
    k = min(MATCH_TOKENS, new_tokens)

    with tempfile.TemporaryDirectory(prefix="chatsmith-bench-generate-") as tmp:
        out = export_hf(model, tok, Path(tmp) / "hf", dtype=torch.float32)
        auto = transformers.AutoModelForCausalLM
        hf = auto.from_pretrained(out, dtype=torch.float32, local_files_only=True)
        hf.to(dev).eval()
        # Greedy throughout: drop the exported sampling defaults so generate warns of nothing.
        hf.generation_config.temperature = None
        hf.generation_config.top_p = None
        hf.generation_config.do_sample = False

        with torch.inference_mode():
            # Greedy agreement in float32, before any bf16.
            # Both sides stop at the end of the turn here: the timed runs below force N
            # tokens, and transformers' min_new_tokens does that by banning the stop token,
            # which would make the two greedy paths part at the turn's end.
            _, _, ours = chatsmith_run(model, tok, prompt, k, None)
            stops = {tok.im_end_id, tok.bos_id}
            cut = next((i + 1 for i, t in enumerate(ours) if t in stops), len(ours))
            gen = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=k, do_sample=False)
            theirs = gen[0, x.size(1) :].tolist()
            tokens_match = ours[:cut] == theirs[:cut]
            k = cut
            if dt != torch.float32:
                hf.to(dt)

            chatsmith_run(model, tok, prompt, new_tokens, amp)  # warm-up
            cs = [chatsmith_run(model, tok, prompt, new_tokens, amp)[:2] for _ in range(repeats)]
            hf_run(hf, x, new_tokens)  # warm-up
            hf_run(hf, x, 1)
            hf_total = min(hf_run(hf, x, new_tokens)[0] for _ in range(repeats))
            hf_ttft = min(hf_run(hf, x, 1)[0] for _ in range(repeats))

    cs_ttft = min(t for t, _ in cs)
    cs_decode = min(d for _, d in cs)
    hf_decode = hf_total - hf_ttft
    if hf_decode <= 0:
        raise ChatsmithError(
            f"timing noise exceeded transformers' decode time ({hf_total:.4f}s for {new_tokens} tokens, "
            f"{hf_ttft:.4f}s for 1); rerun with more --new-tokens or --repeats on a quieter machine"
        )
    cs_rate = (new_tokens - 1) / cs_decode
    hf_rate = (new_tokens - 1) / hf_decode
    return {
        "bench": "generate",
        "device": str(dev),
        "dtype": dtype_name,
        "prompt_tokens": len(prompt),
        "new_tokens": new_tokens,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "chatsmith": {
            "ttft_s": round(cs_ttft, 7),
            "decode_tok_s": round(cs_rate, 2),
            "weights": "float32",
            "compute": dtype_name if amp is None else f"{dtype_name} autocast",
        },
        "transformers": {
            "ttft_s": round(hf_ttft, 7),
            "decode_tok_s": round(hf_rate, 2),
            "version": transformers.__version__,
            "weights": dtype_name,
        },
        "ratio_decode": round(cs_rate / hf_rate, 4),
        "ratio_ttft": round(hf_ttft / cs_ttft, 4),
        "tokens_match": tokens_match,
        "match_tokens": k,
        "note": NOTE,
    }


def bench_generate_main(argv: list[str]) -> int:
    """`chatsmith bench generate --model PATH [...]`: human lines, then JSON on the last line."""
    p = argparse.ArgumentParser(
        prog="chatsmith bench generate",
        description="batch-1 generation speed: chatsmith's engine against transformers on the same weights",
    )
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best counts")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="auto: bfloat16 on CUDA, float32 elsewhere",
    )
    args = p.parse_args(argv)
    r = bench_generate(args.model, args.prompt_tokens, args.new_tokens, args.repeats, args.device, args.dtype)
    for name in ("chatsmith", "transformers"):
        f = r[name]
        print(f"{name:>12}: ttft {f['ttft_s'] * 1e3:.2f} ms, decode {f['decode_tok_s']:.1f} tok/s")
    print(
        f"decode x{r['ratio_decode']:.2f}, ttft x{r['ratio_ttft']:.2f} (above 1: chatsmith faster); "
        f"greedy tokens match: {r['tokens_match']}"
    )
    print(json.dumps(r))
    return 0
