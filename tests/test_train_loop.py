"""The training loop: step hook, gradient accumulation, NaN stop, loader positions, FLOP count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chatsmith.checkpoint import read_meta
from chatsmith.common.config import TrainConfig
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import MetricsLog
from chatsmith.data.chat.packing import SFTLoader
from chatsmith.data.tokens.loaders import PretrainLoader
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.train.loop import Stage, grad_accum_steps, train
from chatsmith.train.speed import flops_per_token

CPU = torch.device("cpu")


def tiny(vocab: int) -> GPT:
    cfg = GPTConfig(
        vocab_size=vocab,
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=64,
        seq_len=32,
        tie_embeddings=True,
    )
    return build_model(cfg, seed=0)


def tokens(n: int = 20000, vocab: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, n).astype(np.uint16)


def cfg(**kw) -> TrainConfig:
    base = dict(
        steps=4, batch_size=4, seq_len=16, warmup_steps=1, eval_every=100, log_every=100, compile="off"
    )
    return TrainConfig(**{**base, **kw})


def test_step_fn_replaces_the_loss_and_its_metrics_are_logged(tiny_tok, tmp_path: Path) -> None:
    calls = []

    def step_fn(model, batch):
        x, y = batch
        calls.append(x.shape)
        loss = model(x, y)
        return loss * 2, {"half": loss.item()}

    log = tmp_path / "m.jsonl"
    stage = Stage("custom", tmp_path / "ckpt", PretrainLoader(tokens(), 4, 16), step_fn=step_fn)
    train(tiny(tiny_tok.vocab_size), tiny_tok, stage, cfg(), CPU, torch.float32, MetricsLog(log, "custom"))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 4 and calls[0] == (4, 16)
    assert all(r["train_loss"] == pytest.approx(2 * r["half"], rel=1e-5) for r in rows)
    assert {"tok_per_s", "mfu", "eta_s"} <= set(rows[0])


def test_accumulated_micro_batches_equal_one_big_batch(tiny_tok, tmp_path: Path) -> None:
    data = tokens()
    losses = []
    for bs, total in ((8, 0), (4, 8 * 16), (2, 8 * 16)):
        log = tmp_path / f"{bs}.jsonl"
        stage = Stage("acc", None, PretrainLoader(data, bs, 16))
        train(
            tiny(tiny_tok.vocab_size),
            tiny_tok,
            stage,
            cfg(batch_size=bs, total_batch_tokens=total),
            CPU,
            torch.float32,
            MetricsLog(log, "acc"),
        )
        losses.append([json.loads(line)["train_loss"] for line in log.read_text().splitlines()])
    assert np.allclose(losses[0], losses[1], atol=1e-5) and np.allclose(losses[0], losses[2], atol=1e-5)


def test_total_batch_must_divide() -> None:
    with pytest.raises(ChatsmithError, match="multiple of batch_size x seq_len x ranks"):
        grad_accum_steps(cfg(total_batch_tokens=100), world=1)
    assert grad_accum_steps(cfg(total_batch_tokens=256), world=2) == 2


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_tok, tmp_path: Path) -> None:
    seen = [0]

    def step_fn(model, batch):
        seen[0] += 1
        loss = model(*batch)
        return (loss * float("nan") if seen[0] == 3 else loss), {}

    stage = Stage("pretrain", tmp_path / "ckpt", PretrainLoader(tokens(), 4, 16), step_fn=step_fn)
    with pytest.raises(ChatsmithError, match="at step 3") as e:
        train(
            tiny(tiny_tok.vocab_size),
            tiny_tok,
            stage,
            cfg(ckpt_every=1),
            CPU,
            torch.float32,
            MetricsLog(None, "x"),
        )
    assert "last good checkpoint" in str(e.value)
    assert read_meta(tmp_path / "ckpt")["step"] == 2


def test_loader_resumes_without_repeating_or_skipping() -> None:
    data = np.arange(16 * 40 + 1, dtype=np.uint32)  # token i at position i: a row names itself
    full = PretrainLoader(data, 3, 16)
    seen = [full.next_batch()[0][:, 0].tolist() for _ in range(8)]
    a = PretrainLoader(data, 3, 16)
    first = [a.next_batch()[0][:, 0].tolist() for _ in range(3)]
    b = PretrainLoader(data, 3, 16)
    b.load_state_dict(a.state_dict())
    assert first + [b.next_batch()[0][:, 0].tolist() for _ in range(5)] == seen
    # Two ranks split the same rows between them, none shared.
    r0, r1 = PretrainLoader(data, 3, 16, 0, 2), PretrainLoader(data, 3, 16, 1, 2)
    two = [sorted(r0.next_batch()[0][:, 0].tolist() + r1.next_batch()[0][:, 0].tolist()) for _ in range(2)]
    one = PretrainLoader(data, 6, 16)
    assert two == [sorted(one.next_batch()[0][:, 0].tolist()) for _ in range(2)]


def test_sft_loader_ranks_cover_what_one_rank_sees() -> None:
    ids = np.arange(20 * 9).reshape(20, 9)
    tgt = ids[:, 1:].copy()
    one = SFTLoader(ids, tgt, 4, seed=1)
    r0, r1 = SFTLoader(ids, tgt, 2, seed=1, rank=0, world=2), SFTLoader(ids, tgt, 2, seed=1, rank=1, world=2)
    for _ in range(7):  # across an epoch boundary
        both = torch.cat([r0.next_batch()[0], r1.next_batch()[0]])
        assert torch.equal(both, one.next_batch()[0])


def test_flops_per_token_counts_matmuls_and_attention() -> None:
    m = tiny(64)
    c = m.cfg
    per_layer = 4 * 32 * 32 + 3 * 32 * 64
    head = 64 * 32  # the tied embedding is the output matmul
    assert flops_per_token(m, 16) == 6 * (per_layer + head) + 12 * c.n_layer * c.n_head * c.head_dim * 16


def test_resume_from_a_folder_without_a_checkpoint_is_a_clear_error(tiny_tok, tmp_path: Path) -> None:
    stage = Stage("pretrain", tmp_path / "ckpt", PretrainLoader(tokens(), 4, 16))
    with pytest.raises(ChatsmithError, match="cannot resume from"):
        train(
            tiny(tiny_tok.vocab_size),
            tiny_tok,
            stage,
            cfg(),
            CPU,
            torch.float32,
            MetricsLog(None, "x"),
            resume=tmp_path / "nothing",
        )


def test_resume_auto_of_a_finished_stage_trains_nothing(tiny_tok, tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    stage = Stage("pretrain", tmp_path / "ckpt", PretrainLoader(tokens(), 4, 16))
    train(tiny(tiny_tok.vocab_size), tiny_tok, stage, cfg(), CPU, torch.float32, MetricsLog(log, "x"))
    n = len(log.read_text().splitlines())
    again = tiny(tiny_tok.vocab_size)
    out = train(again, tiny_tok, stage, cfg(), CPU, torch.float32, MetricsLog(log, "x"), resume="auto")
    assert len(log.read_text().splitlines()) == n and out["step"] == 4
    # ... and the model it hands back is the trained one, not a fresh initialisation.
    saved = read_meta(tmp_path / "ckpt")
    assert saved["step"] == 4 and not torch.equal(
        again.layers[0].mlp.up_proj.weight, tiny(64).layers[0].mlp.up_proj.weight
    )
