"""Pretraining: next-token prediction on a token folder, streamed in BOS-aligned rows.

The folder is what `chatsmith data prepare`/`tokenize` writes (or the demo's, in the same format):
each rank reads its own rows (`data/tokens/stream.py`), validation reads the held-out documents,
bits per byte take the bytes per token from the manifest, and the loader's position goes into
every checkpoint, so `--resume auto` neither repeats nor skips a row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from chatsmith.common.config import Config
from chatsmith.common.dist import barrier, dist_info
from chatsmith.common.log import MetricsLog, info
from chatsmith.data.tokens.folder import bytes_per_token, check_tokenizer, folder_tokenizer, read_manifest
from chatsmith.data.tokens.stream import BOSAlignedLoader
from chatsmith.model.build import build_model, gpt_config
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.loop import Stage, mean_loss, steps_from_epochs, train


def run_tokenizer(tok_dir: Path, out: Path) -> BPETokenizer:
    """The tokenizer a run on this token folder uses: the folder's own, which becomes the run's
    (RUN/tokenizer/); a run that already has another one refuses the folder."""
    tok = folder_tokenizer(tok_dir)
    mine = out / "tokenizer" / "tokenizer.json"
    if mine.is_file():
        check_tokenizer(tok_dir, BPETokenizer.load(mine), f"the run in {out}")
    elif dist_info().is_main:
        tok.save(mine)
    barrier()
    return tok


def val_batches(loader: BOSAlignedLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first n batches of the held-out documents (fewer if they hold fewer)."""
    return [loader.next_batch() for _ in range(min(n, max(1, loader.rows_per_epoch // loader.B)))]


def run_pretrain(
    cfg: Config,
    tok: BPETokenizer,
    tok_dir: Path,
    out_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    resume: str | Path | None = None,
) -> dict[str, Any]:
    tc, di = cfg.pretrain, dist_info()
    fp, vf = tok.fingerprint(), cfg.data.val_fraction
    check_tokenizer(tok_dir, tok, "this run")
    manifest = read_manifest(tok_dir)
    # Each rank materialises its own rows of the one global stream.
    loader = BOSAlignedLoader(
        tok_dir, tc.batch_size, tc.seq_len, di.rank, di.world_size, "train", vf, cfg.run.seed, fingerprint=fp
    )
    val = BOSAlignedLoader(tok_dir, tc.batch_size, tc.seq_len, split="val", val_fraction=vf, fingerprint=fp)
    bpt = bytes_per_token(manifest, "val")
    steps_from_epochs("pretrain", tc, loader, di.world_size)  # --pretrain.epochs=N, like every stage
    model = build_model(gpt_config(cfg.model, tok.vocab_size), device, seed=cfg.run.seed)
    info(
        f"[pretrain] model: {model.num_params() / 1e6:.2f}M parameters "
        f"({model.num_params(non_embedding=True) / 1e6:.2f}M without embeddings); data {tok_dir}: "
        f"{loader.documents} training documents, {loader.tokens_per_epoch / 1e6:.2f}M tokens = "
        f"{loader.rows_per_epoch} rows of {tc.seq_len + 1} an epoch; {val.documents} held-out documents; "
        f"{tc.steps} steps of {tc.batch_size}x{tc.seq_len} per rank"
    )
    vb = val_batches(val, tc.eval_batches)  # every rank scores the same batches: the same figure

    def evaluate() -> dict[str, float]:
        loss = mean_loss(model, vb, device, dtype)
        return {"val_loss": loss, "val_bpb": loss / math.log(2) / bpt}

    stage = Stage("pretrain", out_dir, loader, evaluate, extra_meta={"data": str(Path(tok_dir).resolve())})
    return train(model, tok, stage, tc, device, dtype, metrics, resume=resume, parallel=cfg.run.parallel)
