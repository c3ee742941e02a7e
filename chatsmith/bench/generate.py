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
- prefix cache: TTFT of a long prompt whose first tokens (a shared system prompt) another
  request already ran, against the same engine with the prefix cache off.

Each figure is the best of `--repeats` runs after a warm-up. The runs go in rounds (batch
1, then each concurrency, then again), so every figure samples the same minutes: on a
shared host whose speed drifts, measuring all of batch 1 first and all of 32 at once last
moved their ratio by 10 % or more from one bench to the next. `tokens_match` checks greedy
agreement in float32 up to the end of the first turn. Both sides run in the same dtype:
`auto` is bf16 on GPUs and on CPUs with native bf16 matmuls, float32 elsewhere; the engine
decodes through its compiled step unless `--compile off`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.device import pick_device, pick_dtype
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.engine import Engine
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.interop import export_hf
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt

CONCURRENCY = (8, 32)
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


def chatsmith_run(eng: Engine, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """(TTFT s, seconds for the other n-1 tokens, the n tokens) of one request."""
    params = SamplingParams(temperature=0.0, max_new_tokens=n, ignore_eos=True)
    out: list[int] = []
    t0 = t1 = t2 = time.perf_counter()
    for ev in eng.submit(prompt, params, run_tools=False).events():
        if ev.kind == "token":  # the token is on the host: sampling already waited for the device
            out.append(ev.token)
            t2 = ev.time  # when the scheduler produced it
            if len(out) == 1:
                t1 = ev.time
    return t1 - t0, t2 - t1, out


def chatsmith_concurrent(eng: Engine, prompts: list[list[int]], n: int) -> tuple[float, float]:
    """(aggregate tokens/s, mean TTFT s) of all prompts submitted at once."""
    params = SamplingParams(temperature=0.0, max_new_tokens=n, ignore_eos=True)
    t0 = time.perf_counter()
    reqs = [eng.submit(p, params, run_tools=False) for p in prompts]
    firsts, last = [], t0
    for r in reqs:  # events carry the time they happened, so reading them in turn is exact
        first = None
        for ev in r.events():
            if ev.kind == "token":
                first = ev.time if first is None else first
                last = max(last, ev.time)
        firsts.append((first or last) - t0)
    wall = last - t0
    return len(prompts) * n / wall, sum(firsts) / len(firsts)


def variants(tok: BPETokenizer, n_tokens: int, count: int) -> list[list[int]]:
    """count different prompts of exactly n_tokens each (the filler text shifted)."""
    base = build_prompt(tok, n_tokens + count)
    return [base[:2] + base[2 + i : n_tokens + i] for i in range(count)]


def hf_run(hf: Any, x: torch.Tensor, n: int) -> tuple[float, list[int]]:
    """(seconds, the new tokens of row 0) of one transformers greedy generate of exactly n tokens."""
    mask = torch.ones_like(x)
    _sync(x.device)
    t0 = time.perf_counter()
    out = hf.generate(
        x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True
    )
    _sync(x.device)
    dt = time.perf_counter() - t0
    new = out[0, x.size(1) :].tolist()
    if out.size(1) - x.size(1) != n:
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
    concurrency: tuple[int, ...] = CONCURRENCY,
    compile: bool = True,
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
    if dtype != "auto" and dtype not in DTYPES:
        raise ChatsmithError(f"unknown dtype '{dtype}'; choose auto, float32 or bfloat16")
    dt = pick_dtype(dtype, dev)
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
            # Greedy agreement in float32, before any bf16. Both sides stop at the end of
            # the turn here: the timed runs force N tokens, and transformers'
            # min_new_tokens bans the stop token, which would part the greedy paths there.
            mine = [
                e.token
                for e in Generator(model, tok).stream(
                    prompt, SamplingParams(max_new_tokens=k), run_tools=False
                )
                if e.kind == "token"
            ]
            gen = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=k, do_sample=False)
            theirs = gen[0, x.size(1) :].tolist()
            cut = len(mine)
            tokens_match = mine == theirs[:cut]
            if dt != torch.float32:
                hf.to(dt)

            ours = _run_engine_side(
                str(model_path),
                str(dev),
                dtype_name,
                prompt_tokens,
                new_tokens,
                repeats,
                concurrency,
                compile,
            )

            xs = {c: torch.tensor(variants(tok, prompt_tokens, c), device=dev) for c in concurrency}
            hf_run(hf, x, new_tokens)  # warm-up
            hf_run(hf, x, 1)
            for c in concurrency:
                hf_run(hf, xs[c], new_tokens)
            totals, ttfts, hf_runs = [], [], {c: [] for c in concurrency}
            for _ in range(repeats):  # in rounds, as the engine's side
                totals.append(hf_run(hf, x, new_tokens)[0])
                ttfts.append(hf_run(hf, x, 1)[0])
                for c in concurrency:
                    hf_runs[c].append(hf_run(hf, xs[c], new_tokens)[0])
            hf_total, hf_ttft = min(totals), min(ttfts)
            hf_conc = {c: c * new_tokens / min(r) for c, r in hf_runs.items()}

    cs_ttft, cs_decode, conc, prefix = ours["ttft"], ours["decode"], ours["concurrent"], ours["prefix"]
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
            **{f"aggregate_tok_s_{c}": round(conc[c][0], 2) for c in concurrency},
            **{f"mean_ttft_s_{c}": round(conc[c][1], 5) for c in concurrency},
            "weights": dtype_name,
            "compiled_decode": ours["compiled"],
        },
        "transformers": {
            "ttft_s": round(hf_ttft, 7),
            "decode_tok_s": round(hf_rate, 2),
            **{f"aggregate_tok_s_{c}": round(hf_conc[c], 2) for c in concurrency},
            "version": transformers.__version__,
            "weights": dtype_name,
        },
        "ratio_decode": round(cs_rate / hf_rate, 4),
        "ratio_ttft": round(hf_ttft / cs_ttft, 4),
        **{f"ratio_aggregate_{c}_vs_batch1": round(conc[c][0] / cs_rate, 3) for c in concurrency},
        **{f"ratio_aggregate_{c}_vs_transformers": round(conc[c][0] / hf_conc[c], 3) for c in concurrency},
        "prefix_cache": prefix,
        "tokens_match": tokens_match,
        "match_tokens": cut,
    }


def _engine_side(
    model_path: str,
    device: str,
    dtype: str,
    prompt_tokens: int,
    new_tokens: int,
    repeats: int,
    concurrency: tuple[int, ...],
    compile: bool,
    queue: Any,
) -> None:
    """chatsmith's figures, in a process of its own (`_run_engine_side`); put on queue."""
    box: dict[str, Any] = {}

    def build() -> None:  # on a thread that ends, taking its OpenMP team with it
        model, tok, _ = load_checkpoint(Path(model_path), torch.device(device))
        box["tok"] = tok
        most = max(concurrency, default=1)
        box["eng"] = Engine(model, tok, dtype=DTYPES[dtype], max_batch=most, compile=compile).start()

    t = threading.Thread(target=build)
    t.start()
    t.join()
    eng, tok = box["eng"], box["tok"]
    prompt = build_prompt(tok, prompt_tokens)
    try:
        ps = {c: variants(tok, prompt_tokens, c) for c in concurrency}
        chatsmith_run(eng, prompt, new_tokens)  # warm-up
        for c in concurrency:
            chatsmith_concurrent(eng, ps[c], new_tokens)
        cs, runs = [], {c: [] for c in concurrency}
        for _ in range(repeats):  # in rounds: see the module docstring
            cs.append(chatsmith_run(eng, prompt, new_tokens)[:2])
            for c in concurrency:
                runs[c].append(chatsmith_concurrent(eng, ps[c], new_tokens))
        conc = {c: max(r) for c, r in runs.items()}
        prefix = prefix_cache_run(eng, tok, eng.model.cfg.seq_len - new_tokens, repeats)
        compiled = eng.sched.decoder is not None
    finally:
        eng.shutdown(drain=False)
    ttft, decode = min(t for t, _ in cs), min(d for _, d in cs)
    queue.put({"ttft": ttft, "decode": decode, "concurrent": conc, "prefix": prefix, "compiled": compiled})


def _run_engine_side(*args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_engine_side, args=(*args, q))
    p.start()
    out = q.get()  # before join: a child blocks on exit until its queue is read
    p.join()
    return out


def prefix_cache_run(eng: Engine, tok: BPETokenizer, n_tokens: int, repeats: int) -> dict[str, Any]:
    """TTFT of a prompt whose first 90 % another request just ran, with and without reuse."""
    shared = build_prompt(tok, n_tokens)[: n_tokens * 9 // 10]
    params = SamplingParams(max_new_tokens=1, ignore_eos=True)

    def ttft(question: int) -> float:
        t0 = time.perf_counter()
        eng.submit([*shared, 100 + question, 200 + question], params, run_tools=False).result()
        return time.perf_counter() - t0

    slots = dict(eng.sched.kv.prefixes)
    eng.sched.kv.prefixes.clear()  # the same engine with the prefix cache off
    cold = min(ttft(i) for i in range(repeats + 1))
    eng.sched.kv.prefixes.update(slots)
    ttft(99)  # puts the shared start in the prefix cache
    warm = min(ttft(i) for i in range(repeats + 1))
    return {
        "shared_tokens": len(shared),
        "ttft_cold_s": round(cold, 5),
        "ttft_warm_s": round(warm, 5),
        "speedup": round(cold / warm, 3),
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
        "--compile",
        choices=["on", "off"],
        default="on",
        help="chatsmith's decode step compiled (engine/decode.py)",
    )
    args = p.parse_args(argv)
    try:
        conc = tuple(int(c) for c in args.concurrency.split(","))
    except ValueError:
        raise ChatsmithError(f"--concurrency takes numbers like 8,32, got {args.concurrency!r}") from None
    if not conc or min(conc) < 1:
        raise ChatsmithError(f"--concurrency takes numbers >= 1, got {args.concurrency!r}")
    r = bench_generate(
        args.model,
        args.prompt_tokens,
        args.new_tokens,
        args.repeats,
        args.device,
        args.dtype,
        conc,
        args.compile == "on",
    )
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
    print(json.dumps(r))
    return 0
