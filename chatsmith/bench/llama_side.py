"""llama.cpp's side of `chatsmith bench generate --gguf FILE`: the same prompt lengths and
greedy token counts through `llama-cpp-python` on a GGUF of the same weights, on the same
number of threads, in the same run (ratios from one run on one machine).

It runs in a process of its own, as the engine side does, so that neither's threads wait on
the other's. Weight repacking ("extra buffer types", llama.cpp's --no-repack) is off: with it,
llama.cpp crashed on an AMX host at load; `--gguf-repack on` turns it back on.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import queue
import time
from typing import Any

from chatsmith.common.errors import ChatsmithError


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _load(path: str, n_ctx: int, threads: int, repack: bool) -> Any:
    import llama_cpp
    import llama_cpp.llama_cpp as low

    defaults = low.llama_model_default_params

    def params() -> Any:  # Llama() takes no switch for extra buffer types: set it in its defaults
        p = defaults()
        p.use_extra_bufts = repack
        return p

    low.llama_model_default_params = params
    try:
        return llama_cpp.Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )
    finally:
        low.llama_model_default_params = defaults


def _prompts(llm: Any, text: str, n_tokens: int, count: int) -> list[list[int]]:
    """count different prompts of n_tokens each in llama.cpp's own tokens of the text."""
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    while len(ids) < n_tokens + count:
        ids = ids + ids
    return [ids[i : i + n_tokens] for i in range(count)]


def _run(llm: Any, prompt: list[int], n: int) -> tuple[float, float]:
    """(TTFT s, seconds for the other n-1 tokens) of one greedy request from an empty cache."""
    llm.reset()  # no reuse of the previous prompt's cache
    t0 = time.perf_counter()
    t1 = t0
    for i, _tok in enumerate(llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, reset=True)):
        if i == 0:
            t1 = time.perf_counter()
        if i + 1 == n:
            break
    return t1 - t0, time.perf_counter() - t1


def _llama_side(
    path: str, text: str, counts: tuple[int, int, int], threads: int, repack: bool, q: Any
) -> None:
    prompt_tokens, new_tokens, repeats = counts
    try:
        llm = _load(path, prompt_tokens + new_tokens + 8, threads, repack)
        ps = _prompts(llm, text, prompt_tokens, repeats + 1)
        _run(llm, ps[0], new_tokens)  # warm-up, on a prompt no timed run uses
        runs = [_run(llm, p, new_tokens) for p in ps[1:]]
        q.put({"ttft": min(t for t, _ in runs), "decode": min(d for _, d in runs)})
    except Exception as e:  # reported to the parent, which has the terminal
        q.put({"error": f"{type(e).__name__}: {e}"})


def llama_figures(
    path: str,
    text: str,
    prompt_tokens: int,
    new_tokens: int,
    repeats: int,
    threads: int,
    repack: bool = False,
) -> dict[str, Any]:
    """Batch-1 TTFT and decode tokens/s of llama.cpp on the GGUF at `path`, for prompts of
    prompt_tokens cut from `text` and new_tokens greedy tokens."""
    if not available():
        raise ChatsmithError("--gguf needs llama-cpp-python (pip install llama-cpp-python)")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    counts = (prompt_tokens, new_tokens, repeats)
    p = ctx.Process(target=_llama_side, args=(path, text, counts, threads, repack, q))
    p.start()
    out = None
    while out is None:  # a crash of llama.cpp takes the child down without a word
        try:
            out = q.get(timeout=5)
        except queue.Empty:
            if not p.is_alive():
                out = {"error": f"the llama.cpp process died (exit code {p.exitcode})"}
    p.join()
    if "error" in out:
        raise ChatsmithError(f"llama.cpp on {path}: {out['error']}")
    return {
        "ttft_s": round(out["ttft"], 7),
        "decode_tok_s": round((new_tokens - 1) / out["decode"], 2),
        "threads": threads,
        "repack": repack,
    }
