"""GRPO: group-normalised advantages, the clipped objective, rollouts rebuilt token for token."""

from __future__ import annotations

import pytest
import torch
from test_dpo import tiny_model

from chatsmith.common.config import RLConfig
from chatsmith.eval.report_plots import plot_rl
from chatsmith.tasks.word_problems import check as check_word_problem
from chatsmith.tasks.word_problems import word_problems
from chatsmith.tokenizer.chat_format import tool_response_ids
from chatsmith.train.rl import RolloutLoader, group_advantages, grpo_loss, pass_at
from chatsmith.train.rollout import RolloutBuilder, Sampler


def test_advantages_are_normalised_within_each_group() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0]])
    a = group_advantages(r)
    assert torch.allclose(a.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.equal(a[1], torch.zeros(4))  # all alike: nothing to learn
    assert a[0, 0] > 0 > a[0, 1] and a[2, 3] > 0
    assert torch.allclose(a[0].abs(), torch.ones(4), atol=1e-3)


def test_objective_pushes_up_good_answers_and_clips() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, stats = grpo_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), mask, clip_eps=0.2)
    loss.backward()
    assert (logp.grad[0, :2] < 0).all() and (logp.grad[1] > 0).all() and logp.grad[0, 2] == 0
    assert stats["clip_frac"] == 0.0
    # Past the clip range the gradient of a positive-advantage token vanishes (PPO's trust region).
    far = torch.full((1, 1), 1.0, requires_grad=True)
    loss, stats = grpo_loss(far, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), clip_eps=0.2)
    loss.backward()
    assert far.grad.abs().sum() == 0 and stats["clip_frac"] == 1.0
    # The KL penalty is zero at the reference and positive away from it.
    same = torch.zeros(1, 2)
    _, s0 = grpo_loss(same, same, torch.zeros(1), torch.ones(1, 2), 0.2, ref_logp=same, kl_coef=0.1)
    _, s1 = grpo_loss(same, same, torch.zeros(1), torch.ones(1, 2), 0.2, ref_logp=same - 1, kl_coef=0.1)
    assert s0["kl"] == 0.0 and s1["kl"] > 0


def test_pass_at_k() -> None:
    c = torch.tensor([[False, False, True], [False, False, False]])
    assert pass_at(c, 1) == 0.0 and pass_at(c, 3) == 0.5


def test_rl_plot_draws_the_rl_rows_only(tmp_path) -> None:
    rows = [
        {"stage": "dpo", "step": 1, "train_loss": 0.7},
        {"stage": "rl", "step": 0, "val_accuracy": 0.25},
        {"stage": "rl", "step": 1, "reward": 0.5, "pass@1": 0.5, "pass@2": 1.0},
        {"stage": "rl", "step": 2, "reward": 0.75, "pass@1": 0.75, "pass@2": 1.0, "val_accuracy": 0.5},
        {"stage": "rl", "val_accuracy": 0.5, "early_stopped": 1},  # an early stop's summary: no step
    ]
    out = plot_rl(rows, tmp_path / "rl.png")
    assert out == tmp_path / "rl.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_rl(rows[:1], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_rollout_is_rebuilt_as_the_model_saw_it(tiny_tok) -> None:
    b = RolloutBuilder(tiny_tok, [1, 2, 3])
    call = tiny_tok.encode(
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'
    )
    for t in [*call, tiny_tok.im_end_id]:
        b.token(t)
    b.tool_result("4")
    answer = tiny_tok.encode("It is 4.")
    for t in [*answer, tiny_tok.im_end_id]:
        b.token(t)
    s = b.done("stop")
    feed = tool_response_ids(tiny_tok, "4")
    assert s.ids == [1, 2, 3, *call, tiny_tok.im_end_id, *feed, *answer, tiny_tok.im_end_id]
    assert s.mask == [0] * 3 + [1] * (len(call) + 1) + [0] * len(feed) + [1] * (len(answer) + 1)
    assert s.final_text == "It is 4." and s.token_ids == [
        *call,
        tiny_tok.im_end_id,
        *answer,
        tiny_tok.im_end_id,
    ]


@pytest.mark.parametrize("kl", [0.0, 0.1])
def test_loader_batches_are_scored_and_repeatable(tiny_tok, kl: float) -> None:
    model = tiny_model(tiny_tok)
    cfg = RLConfig(batch_size=2, group_size=4, max_new_tokens=8, kl_coef=kl)
    problems = word_problems(20, 0, "train")

    def reward(ex, group):  # a stand-in that varies within a group: longer answers score higher
        return [float(len(s.token_ids)) for s in group]

    with Sampler(model, tiny_tok, torch.device("cpu"), torch.float32) as sampler:
        loader = RolloutLoader(sampler, tiny_tok, problems, reward, check_word_problem, cfg, seed=3)
        loader.load_state_dict({"step": 5})
        a = loader.next_batch()
        loader.load_state_dict({"step": 5})
        b = loader.next_batch()
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["adv"], b["adv"])
    assert a["x"].shape[0] == a["adv"].shape[0] == a["stats"]["rows"] <= 8
    assert {"reward", "pass@1", "pass@4"} <= set(a["stats"])
    # Only sampled tokens are targets.
    assert (a["y"] != -1).sum() > 0
