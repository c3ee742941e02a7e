"""chatsmith's side of `chatsmith bench generate`: the running engine, timed per request.

It runs in a process of its own whose main thread only submits and reads, as a server's
does: a second thread with torch work slows the engine (engine/engine.py).
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import threading
import time
from pathlib import Path
from typing import Any

import torch

from chatsmith import kernels
from chatsmith.bench.workload import DTYPES, build_prompt, variants
from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.device import set_threads
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.engine import Engine
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tokenizer.bpe import BPETokenizer


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


def prefix_cache_run(eng: Engine, tok: BPETokenizer, n_tokens: int, repeats: int) -> dict[str, Any]:
    """TTFT of a prompt whose first n_tokens another request just ran (then two tokens of
    its own), with and without reuse."""
    shared = build_prompt(tok, n_tokens + 1)[:n_tokens]
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


def _start_engine(
    model_path: str,
    device: str,
    dtype: str,
    concurrency: tuple[int, ...],
    compile: bool,
    memory: dict[str, Any],
    weights: str,
) -> tuple[Engine, BPETokenizer]:
    box: dict[str, Any] = {}

    def build() -> None:  # on a thread that ends, taking its OpenMP team with it
        model, tok, _ = load_checkpoint(Path(model_path), torch.device(device))
        kernels.set_weights(model, weights)  # int8 weight copies, when asked for
        box["tok"] = tok
        most = max(concurrency, default=1)
        box["eng"] = Engine(model, tok, dtype=DTYPES[dtype], max_batch=most, compile=compile, **memory)
        box["eng"].start()

    t = threading.Thread(target=build)
    t.start()
    t.join()
    return box["eng"], box["tok"]


def _engine_side(
    model_path: str,
    device: str,
    dtype: str,
    prompt_tokens: int,
    new_tokens: int,
    repeats: int,
    concurrency: tuple[int, ...],
    compile: bool,
    options: dict[str, Any],
    weights: str,
    queue: Any,
) -> None:
    """chatsmith's figures, in a process of its own (`run_engine_side`); put on queue.
    options: prefix_tokens, threads, and the engine's kv_budget and max_context."""
    set_threads(options.get("threads", 0))  # the parent's choice: both engines alike
    memory = {k: options.get(k) for k in ("kv_budget", "max_context")}
    eng, tok = _start_engine(model_path, device, dtype, concurrency, compile, memory, weights)
    # Batch 1: a prompt of its own for the warm-up and for each timed run, none sharing a
    # start with another, so that no run finds its prompt in the prefix cache.
    singles = [build_prompt(tok, prompt_tokens, f"Request {i} of one user. ") for i in range(repeats + 1)]
    try:
        ps = {c: variants(tok, prompt_tokens, c) for c in concurrency}
        chatsmith_run(eng, singles[0], new_tokens)  # warm-up
        for c in concurrency:
            chatsmith_concurrent(eng, ps[c], new_tokens)
        cs, runs = [], {c: [] for c in concurrency}
        for i in range(repeats):  # in rounds: see chatsmith/bench/generate.py
            cs.append(chatsmith_run(eng, singles[1 + i], new_tokens)[:2])
            for c in concurrency:
                runs[c].append(chatsmith_concurrent(eng, ps[c], new_tokens))
        conc = {c: max(r) for c, r in runs.items()}
        prefix = prefix_cache_run(eng, tok, options["prefix_tokens"], repeats)
        compiled = eng.sched.runner.decoder is not None
    finally:
        eng.shutdown(drain=False)
    ttft, decode = min(t for t, _ in cs), min(d for _, d in cs)
    queue.put({"ttft": ttft, "decode": decode, "concurrent": conc, "prefix": prefix, "compiled": compiled})


def run_engine_side(*args: Any) -> dict[str, Any]:
    """`_engine_side(*args)` in a spawned process; its figures."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_engine_side, args=(*args, q))
    p.start()
    while True:  # read before join: a child blocks on exit until its queue is read
        try:
            out = q.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not p.is_alive():  # it died without figures (its traceback is on stderr)
                why = f"chatsmith's side of the bench stopped (exit code {p.exitcode}); see above"
                raise ChatsmithError(why) from None
    p.join()
    return out
