"""What the preference-pair stages (DPO and the reward model) share: their setup and their run.

Both start from the chat model in `init_dir`, encode the same kind of pairs (too-long or bad
ones skipped and counted), feed the loop from a PairLoader (the loop turns `epochs` into
steps from its row count) and report the same counts; they differ in the model they train,
its step and its held-out figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config, TrainConfig
from chatsmith.common.dist import dist_info
from chatsmith.common.log import MetricsLog
from chatsmith.data.chat.chat_jsonl import Skipped
from chatsmith.data.chat.preferences import EncodedPair, PairLoader, PrefPair, encode_pairs
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.loop import Stage, StepFn, train


@dataclass
class PairSetup:
    """The starting chat model and the encoded pairs of one preference stage."""

    name: str  # "dpo" or "rm"
    cfg: Config
    tc: TrainConfig  # the stage's section of cfg (cfg.dpo or cfg.rm)
    init_dir: Path
    gpt: GPT
    tok: BPETokenizer
    train_enc: list[EncodedPair]
    val_enc: list[EncodedPair]
    skipped: Skipped


def setup_pairs(
    name: str,
    cfg: Config,
    tc: TrainConfig,
    init_dir: Path,
    train_pairs: list[PrefPair],
    val_pairs: list[PrefPair],
    device: torch.device,
    skip_bad: bool,
) -> PairSetup:
    """Load the starting checkpoint and encode the pairs (rows of seq_len + 1 tokens at most)."""
    gpt, tok, _ = load_checkpoint(init_dir, device)
    skipped = Skipped()
    train_enc = encode_pairs(tok, train_pairs, tc.seq_len + 1, skip_bad, skipped)
    val_enc = encode_pairs(tok, val_pairs, tc.seq_len + 1, skip_bad, skipped)
    skipped.report(name)
    return PairSetup(name, cfg, tc, init_dir, gpt, tok, train_enc, val_enc, skipped)


def fit_pairs(
    s: PairSetup,
    model: torch.nn.Module,
    out_dir: Path,
    evaluate: Callable[[], dict[str, float]],
    meta: dict[str, Any],
    step_fn: StepFn,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    resume: str | None,
) -> dict[str, Any]:
    """Run the loop over this rank's share of the training pairs; returns the loop's last figures."""
    di = dist_info()
    loader = PairLoader(s.train_enc, s.tc.batch_size, s.cfg.run.seed, s.tok.bos_id, di.rank, di.world_size)
    stage = Stage(s.name, out_dir, loader, evaluate, meta, step_fn=step_fn)
    parallel = s.cfg.run.parallel
    return train(model, s.tok, stage, s.tc, device, dtype, metrics, resume=resume, parallel=parallel)


def pair_summary(s: PairSetup, last: dict[str, Any], keep: tuple[str, ...], prefix: str) -> dict[str, Any]:
    """The stage's figures named in `keep` or starting with `prefix`, the pair count and the skips."""
    out = {k: v for k, v in last.items() if k in keep or k.startswith(prefix)}
    return {**out, "pairs": len(s.train_enc), "skipped": s.skipped.summary()}
