"""The reward model: Bradley-Terry loss mirrors on swapped pairs; saved with its head and loadable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_dpo import pairs, tiny_model

from chatsmith.checkpoint import save_checkpoint
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.chat.preferences import EncodedPair, PrefPair, collate, encode_pairs
from chatsmith.train.rm import RewardModel, bt_loss, load_reward_model, pairwise_accuracy, save_head


def random_rm(tok, pool: str = "last") -> RewardModel:
    rm = RewardModel(tiny_model(tok), pool)
    torch.manual_seed(1)
    torch.nn.init.normal_(rm.score.weight)
    with torch.no_grad():  # blocks start as the identity; give them weights that mix the context
        for block in rm.gpt.layers:
            block.self_attn.o_proj.weight.normal_(0, 0.3)
            block.mlp.down_proj.weight.normal_(0, 0.3)
    return rm.eval()


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_swapped_pair_mirrors_the_loss(tiny_tok, pool: str) -> None:
    rm = random_rm(tiny_tok, pool)
    enc = pairs(tiny_tok)
    swapped = [EncodedPair(p.rejected, p.chosen) for p in enc]
    with torch.no_grad():
        b, bs = collate(enc, tiny_tok.bos_id), collate(swapped, tiny_tok.bos_id)
        r, rs = rm(b["x"], b["last"], b["answer"]), rm(bs["x"], bs["last"], bs["answer"])
    n = len(enc)
    assert torch.allclose(r[:n], rs[n:], atol=1e-5) and torch.allclose(r[n:], rs[:n], atol=1e-5)
    loss, stats = bt_loss(r[:n], r[n:])
    loss_s, stats_s = bt_loss(rs[:n], rs[n:])
    d = r[:n] - r[n:]
    # -log sigmoid(-d) - (-log sigmoid(d)) = d, per pair.
    assert torch.allclose(loss_s - loss, d.mean(), atol=1e-5)
    assert torch.allclose(loss, F.softplus(-d).mean())
    assert stats["rm_acc"] + stats_s["rm_acc"] == pytest.approx(1.0)
    assert stats["rm_margin"] == pytest.approx(-stats_s["rm_margin"], abs=1e-5)


def test_zero_head_starts_at_ln2(tiny_tok) -> None:
    rm = RewardModel(tiny_model(tiny_tok))
    b = collate(pairs(tiny_tok), tiny_tok.bos_id)
    r = rm(b["x"], b["last"], b["answer"])
    assert bt_loss(r[:6], r[6:])[0].item() == pytest.approx(0.6931471805599453)


def test_saved_and_loaded_reward_model_scores_the_same(tiny_tok, tmp_path) -> None:
    rm = random_rm(tiny_tok, "mean")
    save_checkpoint(tmp_path / "rm", rm.gpt, tiny_tok, {"stage": "rm", "step": 1})
    with pytest.raises(ChatsmithError, match="not a reward model"):
        load_reward_model(tmp_path / "rm")
    save_head(tmp_path / "rm", rm)
    loaded, tok = load_reward_model(tmp_path / "rm")
    assert loaded.pool == "mean"
    prompt = [{"role": "user", "content": "Hi"}]
    answers = [[{"role": "assistant", "content": "Hello!"}], [{"role": "assistant", "content": "Go away."}]]
    a = rm.score_conversations(tiny_tok, [prompt, prompt], answers)
    b = loaded.score_conversations(tok, [prompt, prompt], answers)
    assert a == pytest.approx(b, abs=1e-5) and a[0] != a[1]
    # Scoring one answer alone equals scoring it within a batch of a pair (padding does not leak).
    enc = encode_pairs(tiny_tok, [PrefPair(prompt, answers[0], answers[1])], 128)
    acc = pairwise_accuracy(loaded, enc, torch.device("cpu"), torch.float32, tiny_tok.bos_id)
    assert acc["val_rm_acc"] == float(a[0] > a[1])
