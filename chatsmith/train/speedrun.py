"""The whole pipeline in one call: data -> tokenizer -> pretrain -> sft -> eval -> report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config, to_dict
from chatsmith.common.device import autocast, pick_device, pick_dtype, set_threads
from chatsmith.common.log import MetricsLog, info
from chatsmith.common.paths import run_dir
from chatsmith.data.demo import DemoData
from chatsmith.engine.generate import Generator
from chatsmith.eval.chat_eval import evaluate_chat
from chatsmith.eval.report import write_report
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.pretrain import run_pretrain
from chatsmith.train.sft import run_sft


def speedrun(cfg: Config) -> Path:
    torch.manual_seed(cfg.run.seed)
    set_threads(cfg.run.threads)
    device = pick_device(cfg.run.device)
    dtype = pick_dtype(cfg.run.dtype, device)
    out = run_dir(cfg.run.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    info(f"chatsmith speedrun → {out}  (device {device}, dtype {str(dtype).replace('torch.', '')})")
    timings: dict[str, float] = {}
    stages: dict[str, Any] = {}

    t = time.time()
    data = DemoData(cfg)
    timings["data"] = time.time() - t
    info(
        f"[data] {len(data.docs)} stdlib documents ({sum(len(d) for d in data.docs) / 1e6:.1f}M chars), "
        f"{len(data.chat_train)} training conversations, {len(data.words)} words  ({timings['data']:.1f}s)"
    )

    t = time.time()
    tok = BPETokenizer.train(data.tokenizer_texts(), cfg.tokenizer.vocab_size)
    tok.save(out / "tokenizer" / "tokenizer.json")
    shards = data.write_shards(tok, out / "data")
    timings["tokenizer"] = time.time() - t
    ntok = shards["pretrain_train"]["tokens"]
    bpt = shards["pretrain_train"]["bytes"] / max(1, ntok)
    stages["tokenizer"] = {"vocab": tok.vocab_size, "bytes/token": round(bpt, 3), "train tokens": ntok}
    info(
        f"[tokenizer] vocab {tok.vocab_size}, {ntok / 1e6:.2f}M training tokens, {bpt:.2f} bytes/token "
        f"({timings['tokenizer']:.1f}s)"
    )

    metrics = MetricsLog(out / "metrics.jsonl", "pretrain")
    t = time.time()
    stages["pretrain"] = run_pretrain(cfg, tok, out / "data", out / "base", device, dtype, metrics)
    timings["pretrain"] = time.time() - t

    metrics = MetricsLog(out / "metrics.jsonl", "sft")
    t = time.time()
    stages["sft"] = run_sft(
        cfg,
        out / "base",
        out / "sft",
        [e.messages for e in data.chat_train],
        [e.messages for e in data.chat_val],
        device,
        dtype,
        metrics,
    )
    timings["sft"] = time.time() - t

    t = time.time()
    evals = {}
    for name, limit in (("base", cfg.eval.base_limit), ("sft", None)):
        model, mtok, _ = load_checkpoint(out / name, device)
        gen = Generator(model, mtok, autocast(device, dtype) if dtype != torch.float32 else None)
        evals[name] = evaluate_chat(
            gen, data.eval_examples(limit), cfg.eval.max_new_tokens, desc=f"eval {name}"
        )
        accs = ", ".join(f"{k} {100 * v:.0f}%" for k, v in evals[name]["accuracy"].items())
        info(f"[eval] {name}: {accs}")
    timings["eval"] = time.time() - t
    (out / "eval.json").write_text(json.dumps(evals, indent=1, ensure_ascii=False))

    setup = {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "seed": cfg.run.seed,
        "model": f"depth {cfg.model.depth}",
    }
    report = write_report(out, {"timings": timings, "stages": stages, "evals": evals, "setup": setup})
    info(f"\nreport: {report}")
    return out
