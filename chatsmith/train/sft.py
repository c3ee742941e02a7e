"""Supervised fine-tuning: packed whole conversations, loss on the assistant's tokens only.

Conversations come from TRL-format JSONL files (weighted, see `chat_jsonl`) and/or the
built-in synthetic tasks. A conversation longer than a row is never cut: it is an error
naming its file and line, or, with skip_bad, left out and counted in the report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config
from chatsmith.common.dist import dist_info
from chatsmith.common.log import MetricsLog, info
from chatsmith.data.chat.chat_jsonl import Conversation, Skipped, encode_conversations
from chatsmith.data.chat.packing import SFTLoader, pack_conversations
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.loop import Stage, mean_loss, train
from chatsmith.train.lora import apply_lora

Convs = list[list[dict[str, Any]]] | list[Conversation]


def encode_all(
    tok: BPETokenizer, convs: Convs, max_tokens: int, skip_bad: bool, skipped: Skipped
) -> list[tuple[list[int], list[int]]]:
    """Encode conversations; built-in ones (plain message lists) that do not fit are always counted drops."""
    files = [c for c in convs if isinstance(c, Conversation)]
    builtin = [Conversation(c, "synthetic") for c in convs if not isinstance(c, Conversation)]
    return encode_conversations(tok, files, max_tokens, skip_bad, skipped) + encode_conversations(
        tok, builtin, max_tokens, True, skipped
    )


def run_sft(
    cfg: Config,
    base_dir: Path,
    out_dir: Path,
    train_convs: Convs,
    val_convs: Convs,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    skip_bad: bool = False,
    token_budget: int = 0,
    resume: str | None = None,
) -> dict[str, Any]:
    """Fine-tune the model in base_dir; steps come from sft.steps, sft.epochs (the loop) or a token budget."""
    tc = cfg.sft
    model, tok, _ = load_checkpoint(base_dir, device)
    apply_lora(model, cfg.lora, base_dir, cfg.run.seed, tok)  # with lora.rank > 0: train an adapter only
    skipped = Skipped()
    train_enc = encode_all(tok, train_convs, tc.seq_len + 1, skip_bad, skipped)
    ids, tgt, dropped = pack_conversations(train_enc, tc.seq_len, tok.bos_id)
    vids, vtgt, _ = pack_conversations(
        encode_all(tok, val_convs, tc.seq_len + 1, skip_bad, skipped), tc.seq_len, tok.bos_id
    )
    skipped.report("sft")
    di = dist_info()
    if token_budget > 0:  # a token budget wins over epochs (which the loop turns into steps)
        tc.steps = max(1, math.ceil(token_budget / (tc.batch_size * di.world_size * tc.seq_len)))
        tc.epochs = 0
    trained = int((tgt != -1).sum())
    info(f"[sft] {len(train_enc)} conversations packed into {len(ids)} rows, {trained} trained tokens")
    vl = SFTLoader(vids, vtgt, tc.batch_size, seed=0)
    vb = [vl.next_batch() for _ in range(min(tc.eval_batches, max(1, len(vids) // tc.batch_size)))]

    def evaluate() -> dict[str, float]:
        return {"val_loss": mean_loss(model, vb, device, dtype)}

    loader = SFTLoader(ids, tgt, tc.batch_size, cfg.run.seed, di.rank, di.world_size)
    meta = {"dropped_conversations": skipped.total + dropped, "skipped": skipped.summary()}
    stage = Stage("sft", out_dir, loader, evaluate, meta)
    last = train(model, tok, stage, tc, device, dtype, metrics, resume=resume, parallel=cfg.run.parallel)
    return {**last, "conversations": len(train_enc), "skipped": skipped.total + dropped}
