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
import random
import time
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config, make_config
from chatsmith.common.device import pick_device, pick_dtype, set_threads
from chatsmith.common.log import MetricsLog, info
from chatsmith.common.paths import run_dir
from chatsmith.eval.generation import generate_texts
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


def answers(model: Any, tok: Any, exs: list[Example], max_new: int) -> list[str]:
    prompts = [encode_prompt(tok, ex.prompt) for ex in exs]
    return [o["text"] for o in generate_texts(model, tok, prompts, max_new, run_tools=True)]


def evaluate(model: Any, tok: Any, sets: dict[str, list[Example]], max_new: int) -> dict[str, Any]:
    """Accuracy per held-out set, and which general questions were right (for retention)."""
    out: dict[str, Any] = {}
    for name, exs in sets.items():
        replies = answers(model, tok, exs, max_new)
        check = CHECKS.get(name, general.check)
        right = [bool(check(ex, r)) for ex, r in zip(exs, replies)]
        out[name] = sum(right) / max(1, len(right))
        if name == "general":
            out["general_right"] = right
        out[f"{name}_sample"] = replies[:2]
    return out


def training_conversations(cfg: Config, replay: list[list[dict[str, Any]]]) -> list[Any]:
    """Identity (both languages) and calculator conversations from the built-in tasks, plus the replay."""
    rng = random.Random(cfg.run.seed + 1)
    n = cfg.data.chat_train
    convs = [identity.identity(rng, "train", cfg.identity).messages for _ in range(n // 2)]
    convs += [arithmetic.arithmetic(rng, "train").messages for _ in range(n - n // 2)]
    convs += replay * max(1, n // (4 * max(1, len(replay))))  # about a fifth of the rows
    rng.shuffle(convs)
    return convs


def run(cfg: Config, base: Path, out: Path) -> dict[str, Any]:
    times: dict[str, float] = {}
    t = time.time()
    model, tok, _ = load_checkpoint(base)
    train_q = general.general_questions("train")
    replies = answers(model, tok, train_q, cfg.eval.max_new_tokens)
    replay = [[*ex.prompt, {"role": "assistant", "content": r.strip()}] for ex, r in zip(train_q, replies)]
    times["replay_s"] = time.time() - t
    sets = heldout(cfg)
    t = time.time()
    before = evaluate(model, tok, sets, cfg.eval.max_new_tokens)
    times["eval_before_s"] = time.time() - t
    del model
    train = training_conversations(cfg, [c for c in replay if c[-1]["content"]])
    val = [identity.identity(random.Random(cfg.run.seed + 2), "heldout", cfg.identity).messages]
    t = time.time()
    metrics = MetricsLog(out.parent / "metrics.jsonl", "sft")
    device = pick_device(cfg.run.device)
    sft = run_sft(cfg, base, out, train, val, device, pick_dtype(cfg.run.dtype, device), metrics)
    times["sft_s"] = time.time() - t
    t = time.time()
    tuned, tok, _ = load_checkpoint(out)
    after = evaluate(tuned, tok, sets, cfg.eval.max_new_tokens)
    times["eval_after_s"] = time.time() - t
    kept = [a for b, a in zip(before["general_right"], after["general_right"]) if b]
    after["general_retained"] = sum(kept) / max(1, len(kept))
    return {"before": before, "after": after, "sft_loss": sft.get("train_loss"), "times": times}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chatsmith.train.real_demo")
    p.add_argument("--preset", default="smollm2")
    p.add_argument("--base", default=None, help="the imported model (default: <run>/base)")
    args, overrides = p.parse_known_args(argv)
    cfg = make_config(args.preset, overrides)
    set_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    run_path = run_dir(cfg.run.name)
    base = Path(args.base) if args.base else run_path / "base"
    t0 = time.time()
    summary = run(cfg, base, run_path / "sft")
    summary["wall_s"] = time.time() - t0
    summary["threads"] = torch.get_num_threads()
    (run_path / "real_demo.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    b, a = summary["before"], summary["after"]
    for k in ("identity_en", "identity_zh", "arithmetic", "general"):
        info(f"[real-demo] {k}: {100 * b[k]:.1f}% -> {100 * a[k]:.1f}%")
    info(f"[real-demo] general questions kept: {100 * a['general_retained']:.1f}%; {summary['times']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
