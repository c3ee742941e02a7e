"""DPO: ln 2 at the start, the implicit reward's sign, and that training prefers the chosen answers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from chatsmith.common.config import ModelConfig
from chatsmith.data.chat.preferences import PairLoader, PrefPair, encode_pairs
from chatsmith.model.build import build_model, gpt_config
from chatsmith.train.dpo import dpo_loss, make_dpo_step, preference_accuracy
from chatsmith.train.logprobs import sequence_logps, token_logps


def tiny_model(tok, seed: int = 0):
    m = ModelConfig(depth=1, n_embd=32, head_dim=16, seq_len=128, tie_embeddings=True)
    return build_model(gpt_config(m, tok.vocab_size), "cpu", seed=seed)


def pairs(tok) -> list:
    raw = [
        PrefPair(
            [{"role": "user", "content": f"What is {a} + {a}?"}],
            [{"role": "assistant", "content": f"{2 * a}."}],
            [{"role": "assistant", "content": f"No idea, go away {a}."}],
            kind="polite",
        )
        for a in range(6)
    ]
    return encode_pairs(tok, raw, 128)


def test_loss_is_ln2_when_the_policy_is_the_reference(tiny_tok) -> None:
    model = tiny_model(tiny_tok)
    ref = copy.deepcopy(model).eval()
    batch = PairLoader(pairs(tiny_tok), 4, seed=0, pad_id=tiny_tok.bos_id).next_batch()
    loss, stats = make_dpo_step(ref, beta=0.1, device=torch.device("cpu"))(model, batch)
    assert abs(loss.item() - math.log(2)) < 1e-6
    assert stats["reward_margin"] == 0.0 and stats["pref_acc"] == 0.0


def test_loss_falls_as_the_chosen_answer_gains() -> None:
    pc, pr = torch.tensor([-5.0]), torch.tensor([-5.0])
    ref_c, ref_r = torch.tensor([-5.0]), torch.tensor([-5.0])
    base, _ = dpo_loss(pc, pr, ref_c, ref_r, 0.5)
    better, s = dpo_loss(pc + 1, pr, ref_c, ref_r, 0.5)
    worse, _ = dpo_loss(pc, pr + 1, ref_c, ref_r, 0.5)
    assert better < base < worse and s["reward_chosen"] == 0.5 and s["pref_acc"] == 1.0


def test_sequence_logps_counts_scored_tokens_only() -> None:
    logits = torch.zeros(1, 3, 4)  # uniform: each scored token adds ln(1/4)
    y = torch.tensor([[-1, 2, 3]])
    assert torch.allclose(sequence_logps(logits, y), torch.tensor([2 * math.log(0.25)]))


def test_sequence_logps_sum_the_scored_token_logps() -> None:
    # DPO's sequence figure and RL's per-token one come from the same helper.
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    y = torch.tensor([[-1, 3, 0, 6, -1], [2, -1, -1, 1, 4]])
    per_tok = token_logps(logits, y)
    assert per_tok.shape == (2, 5)
    assert torch.equal(sequence_logps(logits, y), (per_tok * (y != -1)).sum(-1))
    assert torch.allclose(per_tok[0, 1], torch.log_softmax(logits[0, 1], -1)[3])


def test_a_few_steps_make_the_policy_prefer_the_chosen_answers(tiny_tok) -> None:
    torch.manual_seed(0)
    model = tiny_model(tiny_tok)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    enc = pairs(tiny_tok)
    loader = PairLoader(enc, 6, seed=0, pad_id=tiny_tok.bos_id)
    step = make_dpo_step(ref, 0.5, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss, _ = step(model, loader.next_batch())
        loss.backward()
        opt.step()
        opt.zero_grad()
    acc = preference_accuracy(model, ref, enc, 0.5, torch.device("cpu"), torch.float32, tiny_tok.bos_id)
    assert acc["val_pref_acc"] == 1.0 and acc["val_margin"] > 0 and acc["val_pref_acc_polite"] == 1.0


def _chosen_logp(model, enc, tok) -> float:
    from chatsmith.data.chat.preferences import collate

    b = collate(enc, tok.bos_id)
    with torch.no_grad():
        return float(sequence_logps(model(b["x"]), b["y"])[: len(enc)].mean())


def test_the_sft_anchor_adds_the_chosen_nll_and_keeps_chosen_answers_likely(tiny_tok) -> None:
    enc = pairs(tiny_tok)
    batch = PairLoader(enc, 4, seed=0, pad_id=tiny_tok.bos_id).next_batch()
    start = tiny_model(tiny_tok)
    ref = copy.deepcopy(start).eval().requires_grad_(False)
    loss, stats = make_dpo_step(ref, 0.1, torch.device("cpu"), rpo_alpha=0.5)(start, batch)
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * stats["nll_chosen"], rel=1e-5)
    after = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        model = copy.deepcopy(start)
        loader = PairLoader(enc, 6, seed=0, pad_id=tiny_tok.bos_id)
        step = make_dpo_step(ref, 0.5, torch.device("cpu"), rpo_alpha=alpha)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(15):
            loss, _ = step(model, loader.next_batch())
            loss.backward()
            opt.step()
            opt.zero_grad()
        after[alpha] = _chosen_logp(model, enc, tiny_tok)
    # Plain DPO may lower both answers; the anchor must leave the chosen ones more likely.
    assert after[1.0] > after[0.0] and after[1.0] > _chosen_logp(start, enc, tiny_tok)
