"""Pretraining: next-token prediction on the token stream of the corpus."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from chatsmith.common.config import Config
from chatsmith.common.dist import dist_info
from chatsmith.common.log import MetricsLog, info
from chatsmith.data.tokens.loaders import PretrainLoader
from chatsmith.data.tokens.shards import open_shard
from chatsmith.model.build import build_model, gpt_config
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.loop import Stage, mean_loss, train


def val_batches(
    tokens: Any, batch_size: int, seq_len: int, n: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = PretrainLoader(tokens, batch_size, seq_len)
    return [loader.next_batch() for _ in range(min(n, max(1, loader.n_rows // batch_size)))]


def run_pretrain(
    cfg: Config,
    tok: BPETokenizer,
    data_dir: Path,
    out_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    resume: str | Path | None = None,
) -> dict[str, Any]:
    tc = cfg.pretrain
    fp = tok.fingerprint()
    train_tokens = open_shard(data_dir / "pretrain_train.bin", fp)
    val_tokens = open_shard(data_dir / "pretrain_val.bin", fp)
    bytes_per_token = _bytes_per_token(data_dir / "pretrain_val.json")
    model = build_model(gpt_config(cfg.model, tok.vocab_size), device, seed=cfg.run.seed)
    info(
        f"[pretrain] model: {model.num_params() / 1e6:.2f}M parameters "
        f"({model.num_params(non_embedding=True) / 1e6:.2f}M without embeddings), "
        f"{train_tokens.size / 1e6:.2f}M training tokens, {tc.steps} steps of {tc.batch_size}x{tc.seq_len}"
    )
    # Every rank scores the same validation batches, so each gets the same figure.
    vb = val_batches(val_tokens, tc.batch_size, tc.seq_len, tc.eval_batches)

    def evaluate() -> dict[str, float]:
        loss = mean_loss(model, vb, device, dtype)
        return {"val_loss": loss, "val_bpb": loss / math.log(2) / bytes_per_token}

    di = dist_info()
    # Each rank reads its own rows of the stream (rank r takes every world-th row).
    loader = PretrainLoader(train_tokens, tc.batch_size, tc.seq_len, di.rank, di.world_size)
    stage = Stage("pretrain", out_dir, loader, evaluate)
    return train(model, tok, stage, tc, device, dtype, metrics, resume=resume, parallel=cfg.run.parallel)


def _bytes_per_token(manifest: Path) -> float:
    import json

    m = json.loads(manifest.read_text())
    return m.get("bytes", m["tokens"] * 4) / max(1, m["tokens"] - m["documents"])
