"""Log-likelihood of continuations by the model's forward pass, batched.

One request is (context ids, continuation ids); its score is the sum of log P(token) over
the continuation, and whether greedy decoding would have produced it. Sequences are
right-padded: in a causal model, padding after a sequence cannot change its logits.
Sequences longer than the model's context lose tokens from the left of the context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chatsmith.common.device import autocast
from chatsmith.model.gpt import GPT


def _fit(ctx: list[int], cont: list[int], max_len: int) -> tuple[list[int], int]:
    """The input ids (context + continuation minus its last token) and how many are scored."""
    full = (ctx + cont)[-(max_len + 1) :]
    n = min(len(cont), len(full) - 1)
    return full, n


@torch.inference_mode()
def score_batch(
    model: GPT, requests: list[tuple[list[int], list[int]]], dtype: torch.dtype = torch.float32
) -> list[tuple[float, bool]]:
    """(sum log-prob of the continuation, is it the greedy continuation) per request, in one forward."""
    device = model.embed_tokens.weight.device
    fitted = [_fit(c, k, model.cfg.seq_len) for c, k in requests]
    T = max(len(f) - 1 for f, _ in fitted)
    x = torch.zeros(len(fitted), T, dtype=torch.long)
    for i, (full, _) in enumerate(fitted):
        x[i, : len(full) - 1] = torch.tensor(full[:-1])
    with autocast(device, dtype):
        logits = model(x.to(device))  # (B, T, V), float32
    logp = F.log_softmax(logits.float(), dim=-1)
    out = []
    for i, (full, n) in enumerate(fitted):
        L = len(full) - 1
        tgt = torch.tensor(full[L - n + 1 :], device=device)  # (n,): context is never empty, so n >= 1
        rows = logp[i, L - n : L]  # (n, V): the positions that predict the continuation
        ll = float(rows.gather(-1, tgt.view(-1, 1)).sum())
        greedy = bool((rows.argmax(-1) == tgt).all())
        out.append((ll, greedy))
    return out


def score_requests(
    model: GPT,
    requests: list[tuple[list[int], list[int]]],
    dtype: torch.dtype = torch.float32,
    batch_tokens: int = 8192,
) -> list[tuple[float, bool]]:
    """Score requests in order, packing consecutive ones into batches of about batch_tokens.

    Batches follow the order given, so the same requests always meet the same neighbours:
    results never depend on how the caller's work was split between processes.
    """
    out: list[tuple[float, bool]] = []
    batch: list[tuple[list[int], list[int]]] = []
    longest = 0
    for req in requests:
        n = min(len(req[0]) + len(req[1]), model.cfg.seq_len + 1)
        if batch and max(longest, n) * (len(batch) + 1) > batch_tokens:
            out += score_batch(model, batch, dtype)
            batch, longest = [], 0
        batch.append(req)
        longest = max(longest, n)
    if batch:
        out += score_batch(model, batch, dtype)
    return out
