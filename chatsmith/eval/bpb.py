"""Bits per byte on held-out text: sum of token losses (nats) / ln 2 / UTF-8 bytes scored.

Unlike loss per token, bpb compares models with different tokenizers. The documents are
packed into one stream, as in pretraining (each starts with BOS), and cut into windows of
the model's context, so no compute goes to padding; every token is predicted exactly once,
with the window's earlier tokens as context. BOS targets are not scored: they hold no bytes.
Sources: a token shard (`.bin` with its manifest, e.g. a run's `data/pretrain_val.bin`),
or a text file (`.txt`/`.md`: one document; `.jsonl`: one document per `text` field).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from chatsmith.common.device import autocast
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.tokens.shards import open_shard
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer


def load_documents(path: Path, tok: BPETokenizer) -> tuple[list[list[int]], int]:
    """Documents as [BOS, tokens...] and the number of UTF-8 bytes they hold."""
    path = Path(path)
    if path.suffix == ".bin":
        ids = np.asarray(open_shard(path, tok.fingerprint()), dtype=np.int64)
        starts = [*np.flatnonzero(ids == tok.bos_id).tolist(), ids.size]
        docs = [ids[a:b].tolist() for a, b in itertools.pairwise(starts) if b - a > 1]
        manifest = json.loads(path.with_suffix(".json").read_text())
        nbytes = manifest.get("bytes") or sum(len(tok.decode(d[1:]).encode()) for d in docs)
        return docs, int(nbytes)
    if not path.is_file():
        raise ChatsmithError(f"no held-out text at {path} (give a token shard .bin, .txt, .md or .jsonl)")
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ChatsmithError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
    else:
        texts = [path.read_text()]
    texts = [t for t in texts if t]
    if not texts:
        raise ChatsmithError(f"{path}: no text to score")
    return [[tok.bos_id, *ids] for ids in tok.encode_batch(texts)], sum(len(t.encode()) for t in texts)


def windows(docs: list[list[int]], seq_len: int) -> list[list[int]]:
    """Windows of up to seq_len + 1 tokens of the packed stream; consecutive windows share one
    token (the next window's first context token)."""
    stream = [t for d in docs for t in d]
    return [stream[s : s + seq_len + 1] for s in range(0, len(stream) - 1, seq_len)]


@torch.inference_mode()
def window_losses(
    model: GPT,
    wins: list[list[int]],
    skip_id: int,
    dtype: torch.dtype = torch.float32,
    batch_tokens: int = 8192,
) -> list[tuple[float, int]]:
    """(summed loss in nats, tokens scored) of each window, in order; targets == skip_id do not count."""
    device = model.embed_tokens.weight.device
    per_batch = max(1, batch_tokens // (model.cfg.seq_len + 1))
    out: list[tuple[float, int]] = []
    for b in range(0, len(wins), per_batch):
        chunk = wins[b : b + per_batch]
        T = max(len(w) for w in chunk) - 1
        x = torch.zeros(len(chunk), T, dtype=torch.long)
        y = torch.full((len(chunk), T), -1, dtype=torch.long)
        for i, w in enumerate(chunk):
            x[i, : len(w) - 1] = torch.tensor(w[:-1])
            y[i, : len(w) - 1] = torch.tensor(w[1:])
        y[y == skip_id] = -1
        with autocast(device, dtype):
            logits = model(x.to(device))
        loss = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), y.to(device).view(-1), ignore_index=-1, reduction="none"
        )
        nats = loss.view(len(chunk), T).double().sum(1).tolist()
        out += list(zip(nats, (y != -1).sum(1).tolist()))
    return out


def summarize_bpb(records: list[dict[str, Any]], nbytes: int) -> dict[str, Any]:
    nats = math.fsum(r["nats"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    return {
        "n": len(records),
        "bpb": nats / math.log(2) / max(1, nbytes),
        "loss": nats / max(1, tokens),
        "ppl": math.exp(nats / max(1, tokens)),  # perplexity per token: exp of the mean loss
        "tokens": tokens,
        "bytes": nbytes,
    }
