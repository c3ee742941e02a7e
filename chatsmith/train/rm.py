"""A reward model: the chat model with a scalar head, trained on preference pairs.

The head reads the final hidden state at the `<|im_end|>` that closes the answer (the last
token the model saw) and the pairwise Bradley-Terry loss -log sigmoid(r(chosen) - r(rejected))
trains both (as InstructGPT's and DeepSpeed-Chat's reward models). The checkpoint is an
ordinary chat-model checkpoint whose meta.json also holds the head's weights, so every tool
that reads checkpoints reads it, and `load_reward_model` gets the scorer back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatsmith.checkpoint import load_checkpoint, read_meta
from chatsmith.common.config import Config
from chatsmith.common.device import autocast
from chatsmith.common.dist import dist_info
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import MetricsLog, info
from chatsmith.data.chat.preferences import EncodedPair, PrefPair, collate, encode_answer
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.pair_stage import fit_pairs, pair_summary, setup_pairs


class RewardModel(nn.Module):
    """pool "last": the head reads the closing <|im_end|> (InstructGPT); "mean": the mean hidden
    state over the answer's tokens, where the model's view of each token it reads (a stated
    number against the tool's result, say) is still at hand."""

    def __init__(self, gpt: GPT, pool: str = "last") -> None:
        super().__init__()
        if pool not in ("last", "mean"):
            raise ChatsmithError(f"rm.pool is '{pool}'; choose last or mean")
        self.gpt, self.pool = gpt, pool
        w = gpt.embed_tokens.weight
        self.score = nn.Linear(gpt.cfg.n_embd, 1, device=w.device, dtype=w.dtype)
        # A zero head scores every answer 0: the loss starts at ln 2 and no pair is favoured yet.
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, idx: torch.Tensor, last: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
        """idx (B, T), last (B,) index of each row's final token, answer (B, T) 0/1 -> rewards (B,)."""
        h = self.gpt.hidden_states(idx).float()  # (B, T, C)
        if self.pool == "mean":
            w = answer.unsqueeze(-1)  # (B, T, 1)
            h_last = (h * w).sum(1) / w.sum(1).clamp(min=1)  # (B, C)
        else:
            h_last = h[torch.arange(idx.size(0), device=idx.device), last]  # (B, C)
        # The head runs in float32 even under autocast: bf16 would round away small reward gaps.
        with torch.autocast(idx.device.type, enabled=False):
            return F.linear(h_last, self.score.weight.float(), self.score.bias.float()).squeeze(-1)

    def head_state(self) -> dict[str, Any]:
        return {
            "weight": self.score.weight.detach().cpu().flatten().tolist(),
            "bias": self.score.bias.detach().cpu().tolist(),
            "pool": self.pool,
        }

    def load_head_state(self, head: dict[str, list[float]]) -> None:
        with torch.no_grad():
            self.score.weight.copy_(torch.tensor(head["weight"]).view_as(self.score.weight))
            self.score.bias.copy_(torch.tensor(head["bias"]).view_as(self.score.bias))

    @torch.no_grad()
    def score_conversations(
        self,
        tok: BPETokenizer,
        prompts: list[list[dict[str, Any]]],
        answers: list[list[dict[str, Any]]],
        batch_size: int = 32,
    ) -> list[float]:
        """The reward of each answer (its messages) to its prompt."""
        device = self.score.weight.device
        out: list[float] = []
        for i in range(0, len(prompts), batch_size):
            rows = [
                encode_answer(tok, p, a)
                for p, a in zip(prompts[i : i + batch_size], answers[i : i + batch_size])
            ]
            # collate() takes pairs: single answers are the "chosen" half of pairs with themselves.
            b = collate([EncodedPair(r, r) for r in rows], tok.bos_id)
            n = len(rows)
            out += self(b["x"][:n].to(device), b["last"][:n].to(device), b["answer"][:n].to(device)).tolist()
        return out


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry pairwise loss and its figures."""
    d = r_chosen - r_rejected
    dd = d.detach()
    return -F.logsigmoid(d).mean(), {"rm_acc": float((dd > 0).float().mean()), "rm_margin": float(dd.mean())}


def rm_step(device: torch.device) -> Any:
    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        r = model(batch["x"].to(device), batch["last"].to(device), batch["answer"].to(device))
        B = r.size(0) // 2
        return bt_loss(r[:B], r[B:])

    return step


@torch.no_grad()
def pairwise_accuracy(
    rm: RewardModel,
    pairs: list[EncodedPair],
    device: torch.device,
    dtype: torch.dtype,
    pad_id: int,
    batch_size: int = 16,
) -> dict[str, float]:
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        b = collate(chunk, pad_id)
        with autocast(device, dtype):
            r = rm(b["x"].to(device), b["last"].to(device), b["answer"].to(device))
        d = (r[: len(chunk)] - r[len(chunk) :]).tolist()
        for p, di in zip(chunk, d):
            for k in ("all", p.kind or "other"):
                right[k] = right.get(k, 0) + (di > 0)
                total[k] = total.get(k, 0) + 1
    out = {"val_rm_acc": right.get("all", 0) / max(1, total.get("all", 0))}
    out.update({f"val_rm_acc_{k}": right[k] / total[k] for k in sorted(total) if k != "all"})
    return out


def save_head(path: Path, rm: RewardModel) -> None:
    """Add the head to the checkpoint's meta.json (written aside and renamed: never half written)."""
    meta = read_meta(path)
    meta["reward_head"] = rm.head_state()
    tmp = Path(path) / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, Path(path) / "meta.json")


def load_reward_model(path: Path, device: torch.device | str = "cpu") -> tuple[RewardModel, BPETokenizer]:
    gpt, tok, meta = load_checkpoint(path, device)
    if "reward_head" not in meta:
        raise ChatsmithError(f"{path} is a chat model, not a reward model (train one with `chatsmith rm`)")
    rm = RewardModel(gpt, meta["reward_head"].get("pool", "last"))
    rm.load_head_state(meta["reward_head"])
    return rm.eval(), tok


def run_rm(
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
    """Train a reward model from the chat model in init_dir; returns held-out pairwise accuracy."""
    tc = cfg.rm
    s = setup_pairs("rm", cfg, tc, init_dir, train_pairs, val_pairs, device, skip_bad)
    rm = RewardModel(s.gpt, tc.pool)
    info(f"[rm] {len(s.train_enc)} training pairs, {len(s.val_enc)} held-out pairs")

    def evaluate() -> dict[str, float]:
        return pairwise_accuracy(rm, s.val_enc, device, dtype, s.tok.bos_id, tc.batch_size)

    meta = {"init": str(init_dir), "kind": "reward_model"}
    last = fit_pairs(s, rm, out_dir, evaluate, meta, rm_step(device), device, dtype, metrics, resume)
    if dist_info().is_main:
        save_head(out_dir, rm)
    return pair_summary(s, last, ("train_loss", "seconds", "val_rm_acc"), "val_rm_acc_")
