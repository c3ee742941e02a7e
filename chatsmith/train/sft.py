"""Supervised fine-tuning: packed conversations, loss on the assistant's tokens only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config
from chatsmith.common.log import MetricsLog, info, warn
from chatsmith.data.loaders import SFTLoader, pack_conversations
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_conversation
from chatsmith.train.loop import Stage, mean_loss, train


def encode_all(
    tok: BPETokenizer, conversations: list[list[dict[str, Any]]]
) -> list[tuple[list[int], list[int]]]:
    return [encode_conversation(tok, msgs) for msgs in conversations]


def run_sft(
    cfg: Config,
    base_dir: Path,
    out_dir: Path,
    train_convs: list[list[dict[str, Any]]],
    val_convs: list[list[dict[str, Any]]],
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
) -> dict[str, Any]:
    tc = cfg.sft
    model, tok, _ = load_checkpoint(base_dir, device)
    ids, tgt, dropped = pack_conversations(encode_all(tok, train_convs), tc.seq_len, tok.bos_id)
    if dropped:
        warn(
            f"[sft] {dropped} conversations longer than {tc.seq_len + 1} tokens were left out (not truncated)"
        )
    vids, vtgt, _ = pack_conversations(encode_all(tok, val_convs), tc.seq_len, tok.bos_id)
    if tc.epochs > 0:
        tc.steps = max(1, round(tc.epochs * len(ids) / tc.batch_size))
    trained = int((tgt != -1).sum())
    info(
        f"[sft] {len(train_convs)} conversations packed into {len(ids)} rows, {trained} trained tokens; "
        f"{tc.steps} steps ({tc.steps * tc.batch_size / len(ids):.2f} epochs)"
    )
    vl = SFTLoader(vids, vtgt, tc.batch_size, seed=0)
    vb = [vl.next_batch() for _ in range(min(tc.eval_batches, max(1, len(vids) // tc.batch_size)))]

    def evaluate() -> dict[str, float]:
        return {"val_loss": mean_loss(model, vb, device, dtype)}

    stage = Stage(
        "sft",
        out_dir,
        SFTLoader(ids, tgt, tc.batch_size, cfg.run.seed),
        evaluate,
        {"dropped_conversations": dropped},
    )
    return train(model, tok, stage, tc, device, dtype, metrics)
