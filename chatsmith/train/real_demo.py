"""The real-model demo's tuning step: make an imported open model (SmolLM2-135M-Instruct) yours.

    python -m chatsmith.train.real_demo --preset smollm2 --base <run>/base

1. Ask the original model the general questions (tasks/general.py); its own answers to the
   training half become replay conversations, so tuning keeps what it knew.
2. Evaluate it on held-out identity questions (English, Chinese), calculator arithmetic and
   the held-out general questions.
3. LoRA SFT (the preset's [lora] and [sft]) on identity + calculator conversations + replay.
4. Evaluate the adapter the same way, and write <run>/real_demo.json with figures and times.

Import, export and serving are the CLI's verbs around it (Makefile `demo-real`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config, make_config
from chatsmith.common.device import pick_device, pick_dtype, set_threads
from chatsmith.common.log import MetricsLog, info
from chatsmith.common.paths import run_dir
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.tasks import arithmetic, general, identity
from chatsmith.tasks.common import Example
from chatsmith.tokenizer.chat_format import encode_prompt
from chatsmith.train.sft import run_sft


def heldout(cfg: Config) -> dict[str, list[Example]]:
    rng = random.Random(cfg.run.seed + 11)
    n = cfg.eval.identity
    return {
        "identity_en": [identity.identity(rng, "heldout", cfg.identity, "en") for _ in range(n)],
        "identity_zh": [identity.identity(rng, "heldout", cfg.identity, "zh") for _ in range(n)],
        "arithmetic": [arithmetic.arithmetic(rng, "heldout") for _ in range(cfg.eval.arithmetic)],
        "general": general.general_questions("heldout"),
    }


CHECKS = {"identity_en": identity.check, "identity_zh": identity.check, "arithmetic": arithmetic.check}
SLOTS = 32  # sequences decoded together: past ~32 rows a CPU decode step is bound by arithmetic
TOOL_ROOM = 64  # tokens a calculator turn feeds back (closing turn, tool turn, new assistant turn)


def answer_all(model: Any, tok: Any, convs: list[list[dict[str, Any]]], max_new: int) -> list[str]:
    """Greedy replies to every conversation, all through one engine's continuous batching.

    The engine's context is what these prompts need, not the model's (8192 for SmolLM2):
    the KV cache is slots x context, so a full context in every slot took gigabytes.
    """
    prompts = [encode_prompt(tok, c) for c in convs]
    max_len = max(len(p) for p in prompts) + max_new + TOOL_ROOM
    gen = Generator(model, tok, max_len=max_len, slots=min(SLOTS, len(prompts)), prefix_slots=2)
    # Stop at a new turn's start too (SmolLM2's BOS is <|im_start|>), as eval/generation.py does.
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new, stop_token_ids=[tok.bos_id])
    reqs = gen.run(prompts, params, run_tools=True)
    return [c.final_text if (c := r.completions[0]) is not None else "" for r in reqs]


def evaluate(
    model: Any, tok: Any, sets: dict[str, list[Example]], max_new: int, extra: list[Example] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Accuracy per held-out set, which general questions were right (for retention), and the
    replies to `extra` (the replay questions), all answered in one batched pass."""
    exs = [ex for name in sets for ex in sets[name]] + list(extra)
    replies = answer_all(model, tok, [ex.prompt for ex in exs], max_new)
    out: dict[str, Any] = {}
    i = 0
    for name, part in sets.items():
        got, i = replies[i : i + len(part)], i + len(part)
        check = CHECKS.get(name, general.check)
        right = [bool(check(ex, r)) for ex, r in zip(part, got)]
        out[name] = sum(right) / max(1, len(right))
        if name == "general":
            out["general_right"] = right
        out[f"{name}_sample"] = got[:2]
    return out, replies[i:]


def training_conversations(cfg: Config, replay: list[list[dict[str, Any]]]) -> list[Any]:
    """Identity (both languages) and calculator conversations from the built-in tasks, plus the replay."""
    rng = random.Random(cfg.run.seed + 1)
    n = cfg.data.chat_train
    convs = [identity.identity(rng, "train", cfg.identity).messages for _ in range(n // 2)]
    convs += [arithmetic.arithmetic(rng, "train").messages for _ in range(n - n // 2)]
    # The replay is half the rows: with a fifth, 3 of the 16 held-out questions the original
    # answered right went wrong after tuning (a Cyrillic "capital of Russia" among them).
    convs += replay * max(1, n // max(1, len(replay)))
    rng.shuffle(convs)
    return convs


class Stages:
    """Wall and CPU seconds per stage. On a busy machine the wall time says little; the CPU
    time (user + sys, all threads) is what the stage costs a quiet machine of `threads` cores
    when it keeps them busy, so quiet wall ~ cpu_s / threads."""

    def __init__(self) -> None:
        self.times: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        w, c = time.time(), time.process_time()
        yield
        self.times[name] = {"wall_s": round(time.time() - w, 1), "cpu_s": round(time.process_time() - c, 1)}
        load = os.getloadavg()[0]
        info(f"[real-demo] {name}: {self.times[name]}, peak RSS {peak_rss_mb():.0f} MB, load {load:.1f}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(cfg: Config, base: Path, out: Path) -> dict[str, Any]:
    stage = Stages()
    max_new = cfg.eval.max_new_tokens
    with stage("replay_and_eval_before"):
        model, tok, _ = load_checkpoint(base)
        train_q = general.general_questions("train")
        sets = heldout(cfg)
        # The original answers the held-out sets and the replay questions in one pass.
        before, replies = evaluate(model, tok, sets, max_new, train_q)
        info(f"[real-demo] before: { {k: v for k, v in before.items() if isinstance(v, float)} }")
        # Only the answers it got right: replaying a wrong one would teach it.
        right = [(q, r) for q, r in zip(train_q, replies) if general.check(q, r)]
        replay = [[*q.prompt, {"role": "assistant", "content": r.strip()}] for q, r in right]
        del model
    train = training_conversations(cfg, [c for c in replay if c[-1]["content"]])
    val = [identity.identity(random.Random(cfg.run.seed + 2), "heldout", cfg.identity).messages]
    with stage("sft"):
        metrics = MetricsLog(out.parent / "metrics.jsonl", "sft")
        device = pick_device(cfg.run.device)
        sft = run_sft(cfg, base, out, train, val, device, pick_dtype(cfg.run.dtype, device), metrics)
    with stage("eval_after"):
        tuned, tok, _ = load_checkpoint(out)
        after, _ = evaluate(tuned, tok, sets, max_new)
    kept = [a for b, a in zip(before["general_right"], after["general_right"]) if b]
    after["general_retained"] = sum(kept) / max(1, len(kept))
    return {"before": before, "after": after, "sft_loss": sft.get("train_loss"), "times": stage.times}


def eval_only(cfg: Config, model_dir: Path) -> dict[str, Any]:
    """One evaluation pass over the held-out sets, with its time and memory (a measurement)."""
    stage = Stages()
    with stage("load"):
        model, tok, _ = load_checkpoint(model_dir)
    with stage("eval"):
        res, _ = evaluate(model, tok, heldout(cfg), cfg.eval.max_new_tokens)
    res.pop("general_right")
    res.update(times=stage.times, peak_rss_mb=round(peak_rss_mb()), threads=torch.get_num_threads())
    return res


SMOKE = ("Who are you?", "你是谁？", "What is 3817 * 29?")


def serve_smoke(url: str, wait_s: float = 600.0) -> int:
    """Ask a running `chatsmith serve` the demo's questions over its OpenAI API (greedy).

    Only HTTP: the server is its own process, as a user would run it. 0 when it answered
    as the tuned model (its name, the calculator's product)."""
    import urllib.error
    import urllib.request

    t = time.time()
    while True:  # the server loads the base and merges the adapter first
        try:
            models = json.loads(urllib.request.urlopen(f"{url}/v1/models", timeout=10).read())
            break
        except (urllib.error.URLError, OSError):
            if time.time() - t > wait_s:
                info(f"[serve-smoke] no server at {url} after {wait_s:.0f}s")
                return 1
            time.sleep(2)
    name, replies = models["data"][0]["id"], []
    for q in SMOKE:
        msgs = [{"role": "user", "content": q}]
        body = {"model": name, "messages": msgs, "temperature": 0, "max_tokens": 64}
        req = urllib.request.Request(
            f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                replies.append(json.loads(r.read())["choices"][0]["message"]["content"] or "")
        except urllib.error.HTTPError as e:
            info(f"[serve-smoke] {q} -> HTTP {e.code}: {e.read().decode(errors='replace')}")
            return 1
        info(f"[serve-smoke] {q} -> {replies[-1]!r}")
    ok = "chatsmith" in replies[0].lower() and "110693" in replies[2].replace(",", "")
    info(f"[serve-smoke] {'ok' if ok else 'FAILED'} in {time.time() - t:.0f}s")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chatsmith.train.real_demo")
    p.add_argument("--preset", default="smollm2")
    p.add_argument("--base", default=None, help="the imported model (default: <run>/base)")
    p.add_argument("--eval-only", default=None, metavar="MODEL", help="only evaluate MODEL; JSON on stdout")
    p.add_argument("--serve-smoke", default=None, metavar="URL", help="only ask the server at URL")
    args, overrides = p.parse_known_args(argv)
    if args.serve_smoke:
        return serve_smoke(args.serve_smoke.rstrip("/"))
    cfg = make_config(args.preset, overrides)
    set_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    if args.eval_only:
        print(json.dumps(eval_only(cfg, Path(args.eval_only)), ensure_ascii=False))
        return 0
    run_path = run_dir(cfg.run.name)
    base = Path(args.base) if args.base else run_path / "base"
    t0 = time.time()
    summary = run(cfg, base, run_path / "sft")
    summary.update(wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time(), 1))
    summary.update(peak_rss_mb=round(peak_rss_mb()), threads=torch.get_num_threads(), load=os.getloadavg())
    (run_path / "real_demo.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    b, a = summary["before"], summary["after"]
    for k in ("identity_en", "identity_zh", "arithmetic", "general"):
        info(f"[real-demo] {k}: {100 * b[k]:.1f}% -> {100 * a[k]:.1f}%")
    info(f"[real-demo] general questions kept: {100 * a['general_retained']:.1f}%; {summary['times']}")
    info(f"[real-demo] wall {summary['wall_s']}s, cpu {summary['cpu_s']}s, peak {summary['peak_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
