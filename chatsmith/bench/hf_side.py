"""transformers' side of `chatsmith bench generate`: the checkpoint exported with chatsmith's
own exporter, loaded with `AutoModelForCausalLM`, and timed with `generate`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from chatsmith.bench.workload import variants
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.interop import export_hf
from chatsmith.tokenizer.bpe import BPETokenizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ChatsmithError("bench generate compares with transformers: pip install transformers") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_exported(
    transformers: Any, model: torch.nn.Module, tok: BPETokenizer, tmp: Path, dev: torch.device
) -> Any:
    """The model exported to `tmp` in float32 and loaded back by transformers, set to greedy."""
    out = export_hf(model, tok, tmp / "hf", dtype=torch.float32)
    auto = transformers.AutoModelForCausalLM
    hf = auto.from_pretrained(out, dtype=torch.float32, local_files_only=True)
    hf.to(dev).eval()
    # Greedy throughout: drop the exported sampling defaults so generate warns of nothing.
    hf.generation_config.temperature = None
    hf.generation_config.top_p = None
    hf.generation_config.do_sample = False
    return hf


def greedy_match(
    model: torch.nn.Module, tok: BPETokenizer, hf: Any, prompt: list[int], x: torch.Tensor, k: int
) -> tuple[bool, int]:
    """(whether both sides' greedy tokens agree, how many were compared), up to k tokens.

    Both sides stop at the end of the turn here: the timed runs force N tokens, and
    transformers' min_new_tokens bans the stop token, which would part the greedy paths there."""
    mine = [
        e.token
        for e in Generator(model, tok).stream(prompt, SamplingParams(max_new_tokens=k), run_tools=False)
        if e.kind == "token"
    ]
    gen = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=k, do_sample=False)
    theirs = gen[0, x.size(1) :].tolist()
    cut = len(mine)
    return mine == theirs[:cut], cut


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


def hf_figures(
    hf: Any,
    tok: BPETokenizer,
    x: torch.Tensor,
    prompt_tokens: int,
    new_tokens: int,
    repeats: int,
    concurrency: tuple[int, ...],
) -> dict[str, Any]:
    """transformers' best total and TTFT at batch 1 (s), and tokens/s per concurrency."""
    xs = {c: torch.tensor(variants(tok, prompt_tokens, c), device=x.device) for c in concurrency}
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
    conc = {c: c * new_tokens / min(r) for c, r in hf_runs.items()}
    return {"total": min(totals), "ttft": min(ttfts), "concurrent": conc}
