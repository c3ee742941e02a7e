"""Early stopping on held-out general ability, for the stages that tune a chat model further.

DPO and RL optimise one narrow figure (preference accuracy, a task's reward); left alone they
buy it with everything else (in the demo, 60 DPO steps raised bits per byte on held-out text
by more than half). The guard measures two held-out losses of the model at every evaluation:
its loss on held-out conversations of every demo task (what SFT taught) and on held-out
plain text (what pretraining taught). While both stay within `tolerance` of the starting
model's, the weights are kept as the last good ones; when either rises beyond it, training
stops and the last good weights are restored (early stopping, Prechelt 1998).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import save_checkpoint
from chatsmith.common.config import Config
from chatsmith.common.dist import barrier, is_main
from chatsmith.common.log import MetricsLog, info
from chatsmith.data.chat.chat_jsonl import Skipped
from chatsmith.data.chat.packing import SFTLoader, pack_conversations
from chatsmith.eval.bpb import load_documents, window_losses, windows
from chatsmith.model.gpt import GPT
from chatsmith.tasks.mixture import mixture
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.loop import mean_loss
from chatsmith.train.sft import encode_all

GUARD_CONVERSATIONS = 256  # held-out conversations of the demo's task mix
GUARD_WINDOWS = 16  # windows of held-out text


class StopEarly(Exception):
    """Raised from a stage's evaluation when general ability fell too far; the stage restores
    the guard's last good weights and saves them."""


@dataclass
class Guard:
    """Held-out loss batches, the starting model's figures and the last weights within tolerance."""

    chat: list[tuple[torch.Tensor, torch.Tensor]]
    text: list[list[int]]
    tolerance: float
    bos_id: int
    base: dict[str, float] = field(default_factory=dict)
    good: dict[str, torch.Tensor] | None = None
    good_figures: dict[str, float] = field(default_factory=dict)

    def measure(self, model: GPT, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
        """{"guard_chat_loss", "guard_text_loss"} of the model now (those it has data for)."""
        out = {}
        if self.chat:
            out["guard_chat_loss"] = mean_loss(model, self.chat, device, dtype)
        if self.text:
            scored = window_losses(model, self.text, self.bos_id, dtype)
            out["guard_text_loss"] = sum(x for x, _ in scored) / max(1, sum(n for _, n in scored))
        return out

    def start(self, model: GPT, device: torch.device, dtype: torch.dtype) -> None:
        self.base = self.measure(model, device, dtype)
        self.keep(model, self.base)

    def keep(self, model: GPT, figures: dict[str, float]) -> None:
        self.good = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.good_figures = dict(figures)

    def check(self, model: GPT, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
        """Measure; keep the weights if within tolerance, else raise StopEarly."""
        now = self.measure(model, device, dtype)
        rise = max((now[k] / self.base[k] - 1 for k in now if self.base.get(k)), default=0.0)
        now["guard_rise"] = rise
        if self.tolerance > 0 and rise > self.tolerance:
            raise StopEarly(f"held-out loss rose {100 * rise:.1f} % (tolerance {100 * self.tolerance:.0f} %)")
        self.keep(model, now)
        return now

    def remember(self, figures: dict[str, float]) -> None:
        """The stage's own figures for the weights just kept (reported if they are restored)."""
        self.good_figures.update(figures)

    def restore(self, model: GPT) -> dict[str, float]:
        """Put the last good weights back; returns their figures."""
        if self.good is not None:
            model.load_state_dict(self.good)
        return self.good_figures


def make_guard(cfg: Config, run: Path, tok: BPETokenizer, tolerance: float, seq_len: int) -> Guard | None:
    """The guard of a run folder: held-out demo conversations (when the run has the demo's words)
    and held-out text (its pretraining validation shard); None when tolerance is 0 or it has neither."""
    if tolerance <= 0:
        return None
    chat: list[tuple[torch.Tensor, torch.Tensor]] = []
    words_file = run / "data" / "words.json"
    if words_file.is_file():
        words = json.loads(words_file.read_text())
        held = mixture(GUARD_CONVERSATIONS, cfg.run.seed + 9, "heldout", cfg.identity, words)
        enc = encode_all(tok, [e.messages for e in held], seq_len + 1, True, Skipped())
        ids, tgt, _ = pack_conversations(enc, seq_len, tok.bos_id)
        loader = SFTLoader(ids, tgt, 16, seed=0)
        chat = [loader.next_batch() for _ in range(max(1, len(ids) // 16))]
    text: list[list[int]] = []
    val = run / "data" / "pretrain_val.bin"
    if val.is_file():
        docs, _ = load_documents(val, tok)
        text = windows(docs, seq_len)[:GUARD_WINDOWS]
    if not chat and not text:
        info(f"[guard] {run} has no held-out conversations or text: no early stopping")
        return None
    return Guard(chat, text, tolerance, tok.bos_id)


def run_guarded(
    fit: Callable[[], dict[str, Any]],
    stage: str,
    guard: Guard | None,
    model: GPT,
    tok: BPETokenizer,
    out_dir: Path,
    meta: dict[str, Any],
    total_steps: int,
    metrics: MetricsLog,
) -> dict[str, Any]:
    """fit() (the stage's training), or after a StopEarly the last good weights, saved."""
    try:
        return fit()
    except StopEarly as e:
        if guard is None:
            raise
        return stop_and_save(stage, guard, e, model, tok, out_dir, meta, total_steps, metrics)


def stop_and_save(
    stage: str,
    guard: Guard,
    err: StopEarly,
    model: GPT,
    tok: BPETokenizer,
    out_dir: Path,
    meta: dict[str, Any],
    total_steps: int,
    metrics: MetricsLog,
) -> dict[str, Any]:
    """After a StopEarly: restore the last good weights, save them as the stage's finished
    checkpoint (so --resume auto has nothing to continue) and return their figures."""
    figures = guard.restore(model)
    model.eval()
    info(f"[{stage}] early stop: {err}; the last good weights are kept")
    row = {**figures, "early_stopped": 1}
    metrics.write(**row)
    if is_main():
        done = {"stage": stage, "step": total_steps, "total_steps": total_steps, "loader": {}}
        save_checkpoint(out_dir, model, tok, {**done, **meta, **row})
    barrier()
    return row
