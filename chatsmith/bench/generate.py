"""`chatsmith bench generate`: the engine's speed against transformers on the same weights.

Both sides run the same weights: the checkpoint is exported with chatsmith's own exporter
into a temporary folder and loaded with `AutoModelForCausalLM`. Every run decodes
greedily and produces exactly `--new-tokens` tokens (neither stops at `<|im_end|>`).

- batch 1: one request through the running engine (its scheduler thread, as a server
  uses it); TTFT is submit to first token, the decode rate covers the other N-1 tokens.
  The engine side runs in a process of its own whose main thread only submits and reads,
  as a server's does: a second thread with torch work slows the engine (engine/engine.py).
  transformers: `generate(max_new_tokens=N, min_new_tokens=N, do_sample=False)`, timed
  whole; TTFT is a run with N=1; decode tokens/s = (N-1) / (total - TTFT).
- concurrent (8 and 32): that many different prompts of the same length submitted at
  once; aggregate tokens/s = all generated tokens / wall time until the last finishes.
  transformers: one `generate` call on the same prompts as a batch.
- prefix cache: TTFT of a prompt whose first `--prefix-tokens` tokens (a shared system
  prompt) another request already ran, against the same engine with the prefix cache off.
- llama.cpp (with `--gguf FILE`, where llama-cpp-python is installed): batch-1 TTFT and
  decode rate on that GGUF, same prompt length, new tokens and threads (bench/llama_side.py).

Batch 1 never reuses a prompt (the warm-up's included), so its TTFT is a whole prefill.

Each figure is the best of `--repeats` runs after a warm-up. The runs go in rounds (batch
1, then each concurrency, then again), so every figure samples the same minutes: on a
shared host whose speed drifts, measuring all of batch 1 first and all of 32 at once last
moved their ratio by 10 % or more from one bench to the next. `tokens_match` checks greedy
agreement in float32 up to the end of the first turn. Both sides run in the same dtype:
`auto` is bf16 on GPUs and on CPUs with native bf16 matmuls, float32 elsewhere; the engine
decodes through its compiled step unless `--compile off`.

The parts: bench/workload.py (prompts), bench/engine_side.py (chatsmith's runs and the prefix
cache), bench/hf_side.py (the export, transformers' runs, greedy agreement); this file checks
the arguments and writes the report.
"""


from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from chatsmith.bench.engine_side import run_engine_side
from chatsmith.bench.hf_side import greedy_match, hf_figures, load_exported, load_transformers
from chatsmith.bench.llama_side import llama_figures
from chatsmith.bench.workload import CONCURRENCY, DTYPES, MATCH_TOKENS, build_prompt
from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.device import pick_device, pick_dtype, set_threads
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.memory import add_memory_flags, add_threads_flag, add_weights_flag

__all__ = ["CONCURRENCY", "DTYPES", "bench_generate", "bench_generate_main", "build_prompt"]


def _check_counts(prompt_tokens: int, new_tokens: int, repeats: int) -> None:
    if prompt_tokens < 1:
        raise ChatsmithError(f"--prompt-tokens must be >= 1, got {prompt_tokens}")
    if new_tokens < 2:
        raise ChatsmithError(
            f"--new-tokens must be >= 2 (the decode rate counts the tokens after the first), got {new_tokens}"
        )
    if repeats < 1:
        raise ChatsmithError(f"--repeats must be >= 1, got {repeats}")


def bench_generate(
    model_path: str | Path,
    prompt_tokens: int = 64,
    new_tokens: int = 128,
    repeats: int = 3,
    device: str = "auto",
    dtype: str = "auto",
    concurrency: tuple[int, ...] = CONCURRENCY,
    compile: bool = True,
    prefix_tokens: int | None = None,
    gguf: str | None = None,
    memory: dict[str, Any] | None = None,
    weights: str = "bf16",
) -> dict[str, Any]:
    """Measure both engines on one checkpoint; the dict `bench_generate_main` prints. gguf: a
    GGUF of the same weights to time llama.cpp on; memory: the engine's kv_budget, max_context."""
    _check_counts(prompt_tokens, new_tokens, repeats)
    dev = pick_device(device)
    if dtype != "auto" and dtype not in DTYPES:
        raise ChatsmithError(f"unknown dtype '{dtype}'; choose auto, float32 or bfloat16")
    dt = pick_dtype(dtype, dev)
    dtype_name = "bfloat16" if dt == torch.bfloat16 else "float32"
    model, tok, _ = load_checkpoint(Path(model_path), dev)
    positions = model.cfg.seq_len  # the context, and the exported max_position_embeddings
    prefix_tokens = _check_extras(positions, prompt_tokens + new_tokens, prefix_tokens, gguf)
    transformers = load_transformers()
    prompt = build_prompt(tok, prompt_tokens)
    x, k = torch.tensor([prompt], dtype=torch.long, device=dev), min(MATCH_TOKENS, new_tokens)

    with tempfile.TemporaryDirectory(prefix="chatsmith-bench-generate-") as tmp:
        hf = load_exported(transformers, model, tok, Path(tmp), dev)
        with torch.inference_mode():
            # Greedy agreement in float32, before any bf16.
            tokens_match, cut = greedy_match(model, tok, hf, prompt, x, k)
            if dt != torch.float32:
                hf.to(dt)
            ours = run_engine_side(
                str(model_path),
                str(dev),
                dtype_name,
                prompt_tokens,
                new_tokens,
                repeats,
                concurrency,
                compile,
                {"prefix_tokens": prefix_tokens, "threads": torch.get_num_threads(), **(memory or {})},
                weights,
            )
            theirs = hf_figures(hf, tok, x, prompt_tokens, new_tokens, repeats, concurrency)

    head = {"device": str(dev), "dtype": dtype_name, "weights": weights, "threads": torch.get_num_threads()}
    head |= {"prompt_tokens": len(prompt), "new_tokens": new_tokens}
    match = {"tokens_match": tokens_match, "match_tokens": cut}
    r = _report(head, repeats, concurrency, ours, theirs, transformers.__version__, match)
    if gguf is not None:
        _add_llama_cpp(r, gguf, tok.decode(prompt), repeats)
    return r


def _add_llama_cpp(r: dict[str, Any], gguf: str, text: str, repeats: int) -> None:
    """llama.cpp's figures on the GGUF for the same prompt text and counts, and the ratios."""
    lc = llama_figures(gguf, text, r["prompt_tokens"], r["new_tokens"], repeats, torch.get_num_threads())
    r["llama_cpp"] = {**lc, "gguf": str(gguf)}
    r["ratio_decode_vs_llama_cpp"] = round(r["chatsmith"]["decode_tok_s"] / lc["decode_tok_s"], 4)
    r["ratio_ttft_vs_llama_cpp"] = round(lc["ttft_s"] / r["chatsmith"]["ttft_s"], 4)


def _check_extras(positions: int, total: int, prefix_tokens: int | None, gguf: str | None) -> int:
    """The prefix-cache figure's shared tokens (default 512, or what fits), after checking
    them, the prompt and new tokens (`total`) against the context, and the GGUF's path."""
    if total > positions:
        raise ChatsmithError(
            f"--prompt-tokens + --new-tokens ({total}) exceed the model's context ({positions} tokens)"
        )
    most = positions - 3  # the timed prompt is the shared start, 2 tokens of its own, and 1 generated
    if prefix_tokens is None:
        prefix_tokens = min(512, most)
    if not 16 <= prefix_tokens <= most:
        raise ChatsmithError(f"--prefix-tokens must be in [16, {most}], got {prefix_tokens}")
    if gguf is not None and not Path(gguf).is_file():
        raise ChatsmithError(f"no GGUF file at {gguf}")
    return prefix_tokens


def _report(
    head: dict[str, Any],
    repeats: int,
    concurrency: tuple[int, ...],
    ours: dict[str, Any],
    theirs: dict[str, Any],
    hf_version: str,
    match: dict[str, Any],
) -> dict[str, Any]:
    """The printed figures: rates from the best times of both sides, and their ratios."""
    new_tokens, dtype_name = head["new_tokens"], head["dtype"]
    cs_ttft, cs_decode, conc, prefix = ours["ttft"], ours["decode"], ours["concurrent"], ours["prefix"]
    hf_total, hf_ttft, hf_conc = theirs["total"], theirs["ttft"], theirs["concurrent"]
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
        **head,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "chatsmith": {
            "ttft_s": round(cs_ttft, 7),
            "decode_tok_s": round(cs_rate, 2),
            **{f"aggregate_tok_s_{c}": round(conc[c][0], 2) for c in concurrency},
            **{f"mean_ttft_s_{c}": round(conc[c][1], 5) for c in concurrency},
            "weights": dtype_name,
            "compiled_decode": ours["compiled"],
        },
        "transformers": {
            "ttft_s": round(hf_ttft, 7),
            "decode_tok_s": round(hf_rate, 2),
            **{f"aggregate_tok_s_{c}": round(hf_conc[c], 2) for c in concurrency},
            "version": hf_version,
            "weights": dtype_name,
        },
        "ratio_decode": round(cs_rate / hf_rate, 4),
        "ratio_ttft": round(hf_ttft / cs_ttft, 4),
        **{f"ratio_aggregate_{c}_vs_batch1": round(conc[c][0] / cs_rate, 3) for c in concurrency},
        **{f"ratio_aggregate_{c}_vs_transformers": round(conc[c][0] / hf_conc[c], 3) for c in concurrency},
        "prefix_cache": prefix,
        **match,
    }


def bench_generate_main(argv: list[str]) -> int:
    """`chatsmith bench generate --model PATH [...]`: human lines, then JSON on the last line."""
    p = argparse.ArgumentParser(
        prog="chatsmith bench generate",
        description="generation speed (batch 1, 8 and 32 at once, prefix cache): chatsmith's engine "
        "against transformers on the same weights",
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
    p.add_argument("--concurrency", default="8,32", help="comma-separated numbers of requests at once")
    p.add_argument(
        "--prefix-tokens", type=int, default=None, help="shared start of the prefix-cache figure (512)"
    )
    p.add_argument("--gguf", default=None, help="a GGUF of the same weights: time llama.cpp on it too")
    add_memory_flags(p)
    p.add_argument(
        "--compile",
        choices=["on", "off"],
        default="on",
        help="chatsmith's decode step compiled (engine/decode.py)",
    )
    add_weights_flag(p)
    add_threads_flag(p)
    args = p.parse_args(argv)
    try:
        conc = tuple(int(c) for c in args.concurrency.split(","))
    except ValueError:
        raise ChatsmithError(f"--concurrency takes numbers like 8,32, got {args.concurrency!r}") from None
    if not conc or min(conc) < 1:
        raise ChatsmithError(f"--concurrency takes numbers >= 1, got {args.concurrency!r}")
    set_threads(args.threads)  # both sides run this many (the engine's process is told)
    r = bench_generate(
        args.model,
        args.prompt_tokens,
        args.new_tokens,
        args.repeats,
        args.device,
        args.dtype,
        conc,
        args.compile == "on",
        args.prefix_tokens,
        args.gguf,
        {"kv_budget": args.kv_budget, "max_context": args.max_context},
        args.weights,
    )
    _print_summary(r, conc)
    print(json.dumps(r))
    return 0


def _print_summary(r: dict[str, Any], conc: tuple[int, ...]) -> None:
    """The human lines above the JSON."""
    for name in ("chatsmith", "transformers"):
        f = r[name]
        agg = ", ".join(f"{c} at once {f[f'aggregate_tok_s_{c}']:.0f}" for c in conc)
        print(
            f"{name:>12}: ttft {f['ttft_s'] * 1e3:.2f} ms, decode {f['decode_tok_s']:.1f} tok/s; tok/s {agg}"
        )
    print(
        f"decode x{r['ratio_decode']:.2f}, ttft x{r['ratio_ttft']:.2f} vs transformers (above 1: chatsmith "
        f"faster); {max(conc)} at once x{r[f'ratio_aggregate_{max(conc)}_vs_batch1']:.1f} batch 1; "
        f"prefix cache TTFT "
        f"x{r['prefix_cache']['speedup']:.1f}; greedy tokens match: {r['tokens_match']}"
    )
    if "llama_cpp" in r:
        lc = r["llama_cpp"]
        print(
            f"   llama.cpp: ttft {lc['ttft_s'] * 1e3:.2f} ms, decode {lc['decode_tok_s']:.1f} tok/s "
            f"({lc['threads']} threads); chatsmith decode x{r['ratio_decode_vs_llama_cpp']:.2f}, "
            f"ttft x{r['ratio_ttft_vs_llama_cpp']:.2f}"
        )
