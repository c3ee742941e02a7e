"""Direct Preference Optimization (Rafailov et al. 2023) against a frozen reference model.

The loss per pair is -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))),
with log-probabilities summed over the answer's tokens only. The implicit reward of an
answer is beta * (log pi - log ref); a pair counts as preferred when the chosen answer's
implicit reward is the higher one, which is the held-out "preference accuracy".
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from chatsmith.common.config import Config
from chatsmith.common.device import autocast
from chatsmith.common.log import MetricsLog, info
from chatsmith.data.chat.preferences import EncodedPair, PrefPair, collate
from chatsmith.model.gpt import GPT
from chatsmith.train.guard import make_guard, run_guarded
from chatsmith.train.logprobs import sequence_logps
from chatsmith.train.lora import apply_lora, reference_of
from chatsmith.train.pair_stage import fit_pairs, pair_summary, setup_pairs


def dpo_loss(
    pol_c: torch.Tensor,
    pol_r: torch.Tensor,
    ref_c: torch.Tensor,
    ref_r: torch.Tensor,
    beta: float,
    nll_chosen: torch.Tensor | None = None,
    rpo_alpha: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss of a batch and its figures (implicit rewards, margin, preference accuracy).

    With rpo_alpha > 0, plus rpo_alpha x the chosen answers' mean token NLL (`nll_chosen`): the
    SFT loss as an anchor (RPO, Pang et al. 2024; TRL's `rpo_alpha`). Without it DPO can raise
    the margin by pushing both answers down, and the chat model's other skills go with them.
    """
    rew_c, rew_r = beta * (pol_c - ref_c), beta * (pol_r - ref_r)
    margin = rew_c - rew_r
    loss = -F.logsigmoid(margin).mean()
    extra: dict[str, float] = {}
    if nll_chosen is not None and rpo_alpha > 0:
        loss = loss + rpo_alpha * nll_chosen
        extra["nll_chosen"] = float(nll_chosen.detach())
    rew_c, rew_r, margin = rew_c.detach(), rew_r.detach(), margin.detach()
    return loss, {
        **extra,
        "reward_chosen": float(rew_c.mean()),
        "reward_rejected": float(rew_r.mean()),
        "reward_margin": float(margin.mean()),
        "pref_acc": float((margin > 0).float().mean()),
    }


def make_dpo_step(ref: torch.nn.Module, beta: float, device: torch.device, rpo_alpha: float = 0.0) -> Any:
    """step_fn for the loop: policy log-probs with gradients, the reference's without."""

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch["x"].to(device), batch["y"].to(device)
        B = x.size(0) // 2
        pol = sequence_logps(model(x), y)
        with torch.no_grad():
            refl = sequence_logps(ref(x), y)
        # Mean NLL per chosen-answer token, as TRL's rpo_alpha term.
        nll = -pol[:B].sum() / (y[:B] != -1).sum().clamp(min=1)
        return dpo_loss(pol[:B], pol[B:], refl[:B], refl[B:], beta, nll, rpo_alpha)

    return step


@torch.no_grad()
def preference_accuracy(
    model: GPT,
    ref: GPT,
    pairs: list[EncodedPair],
    beta: float,
    device: torch.device,
    dtype: torch.dtype,
    pad_id: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Held-out preference accuracy (overall and per kind) and mean reward margin."""
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    margins = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        b = collate(chunk, pad_id)
        x, y = b["x"].to(device), b["y"].to(device)
        with autocast(device, dtype):
            pol, refl = sequence_logps(model(x), y), sequence_logps(ref(x), y)
        B = len(chunk)
        m = beta * ((pol[:B] - refl[:B]) - (pol[B:] - refl[B:]))
        margins += m.tolist()
        for p, mi in zip(chunk, m.tolist()):
            for k in ("all", p.kind or "other"):
                right[k] += mi > 0
                total[k] += 1
    out = {
        "val_pref_acc": right["all"] / max(1, total["all"]),
        "val_margin": sum(margins) / max(1, len(margins)),
    }
    out.update({f"val_pref_acc_{k}": right[k] / total[k] for k in sorted(total) if k != "all"})
    return out


def run_dpo(
    cfg: Config,
    init_dir: Path,
    out_dir: Path,
    train_pairs: list[PrefPair],
    val_pairs: list[PrefPair],
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    skip_bad: bool = False,
    resume: str | None = None,
) -> dict[str, Any]:
    """Train the policy from init_dir (the SFT model, which is also the frozen reference)."""
    tc = cfg.dpo
    s = setup_pairs("dpo", cfg, tc, init_dir, train_pairs, val_pairs, device, skip_bad)
    model, tok = s.gpt, s.tok
    apply_lora(model, cfg.lora, init_dir, cfg.run.seed, tok)  # then the reference is the base, adapters off
    ref = reference_of(model)
    info(f"[dpo] {len(s.train_enc)} training pairs, {len(s.val_enc)} held-out pairs, beta {tc.beta}")

    guard = make_guard(cfg, init_dir.parent, tok, tc.guard_tolerance, tc.seq_len)
    if guard is not None:
        guard.start(model, device, dtype)

    def evaluate() -> dict[str, float]:
        out = preference_accuracy(model, ref, s.val_enc, tc.beta, device, dtype, tok.bos_id, tc.batch_size)
        if guard is not None:
            out.update(guard.check(model, device, dtype))  # raises StopEarly past the tolerance
            guard.remember(out)
        return out

    meta = {"init": str(init_dir), "beta": tc.beta, "rpo_alpha": tc.rpo_alpha}
    step = make_dpo_step(ref, tc.beta, device, tc.rpo_alpha)
    fit = partial(fit_pairs, s, model, out_dir, evaluate, meta, step, device, dtype, metrics, resume)
    last = run_guarded(fit, "dpo", guard, model, tok, out_dir, meta, tc.steps, metrics)
    keep = ("train_loss", "seconds", "val_pref_acc", "val_margin", "guard_rise", "early_stopped")
    return pair_summary(s, last, keep, "val_pref_acc_")
