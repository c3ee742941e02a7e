"""Early stopping: the guard keeps the last weights within tolerance and stops past it."""

from __future__ import annotations

import pytest
import torch

from chatsmith.common.config import ModelConfig
from chatsmith.model.build import build_model, gpt_config
from chatsmith.train.guard import Guard, StopEarly


def _guard(tok, tolerance: float) -> Guard:
    ids = tok.encode("The quick brown fox jumps over the lazy dog. " * 20)
    text = [[tok.bos_id, *ids[i : i + 64]] for i in range(0, 4 * 64, 64)]
    return Guard([], text, tolerance, tok.bos_id)


def test_guard_stops_past_its_tolerance_and_restores_the_last_good_weights(tiny_tok) -> None:
    m = ModelConfig(depth=1, n_embd=32, head_dim=16, seq_len=128, tie_embeddings=True)
    model = build_model(gpt_config(m, tiny_tok.vocab_size), "cpu", seed=0)
    cpu = torch.device("cpu")
    g = _guard(tiny_tok, 0.05)
    g.start(model, cpu, torch.float32)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    assert g.check(model, cpu, torch.float32)["guard_rise"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # wreck the model: its held-out loss goes far up
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 2)
    with pytest.raises(StopEarly):
        g.check(model, cpu, torch.float32)
    figures = g.restore(model)
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    assert figures["guard_text_loss"] == pytest.approx(g.base["guard_text_loss"])


def test_guard_with_zero_tolerance_never_stops(tiny_tok) -> None:
    m = ModelConfig(depth=1, n_embd=32, head_dim=16, seq_len=128, tie_embeddings=True)
    model = build_model(gpt_config(m, tiny_tok.vocab_size), "cpu", seed=0)
    g = _guard(tiny_tok, 0.0)
    g.start(model, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 2)
    assert g.check(model, torch.device("cpu"), torch.float32)["guard_rise"] > 0.05
