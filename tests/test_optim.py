"""Muon + AdamW: orthogonalised updates, parameter groups, and state that round-trips."""

from __future__ import annotations

import copy

import pytest
import torch

from chatsmith.common.config import TrainConfig
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.train.optim import Muon, make_optimizer, muon_momentum, orthogonalize

CPU = torch.device("cpu")


def tiny(tied: bool = False) -> GPT:
    cfg = GPTConfig(
        vocab_size=64,
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_kv_head=1,
        head_dim=16,
        intermediate_size=64,
        seq_len=32,
        tie_embeddings=tied,
    )
    return build_model(cfg, seed=0)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_orthogonalize_flattens_the_singular_values(shape: tuple[int, int], dtype: torch.dtype) -> None:
    # A gradient whose singular values span a factor of 20: Newton-Schulz brings all near 1.
    gen = torch.Generator().manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen))
    g = u @ torch.diag(torch.logspace(0, 1.3, k)) @ v.T
    s = torch.linalg.svdvals(orthogonalize(g, dtype=dtype).float())
    assert s.min() > 0.5 and s.max() < 1.3, s


@pytest.mark.parametrize("shape", [(64, 32), (32, 48)])
def test_a_stack_is_orthogonalised_matrix_by_matrix(shape: tuple[int, int]) -> None:
    # Muon orthogonalises same-shape matrices as one stack; each must come out as if alone,
    # whatever its scale next to the others.
    gen = torch.Generator().manual_seed(1)
    gs = torch.randn(3, *shape, generator=gen) * torch.tensor([1e-3, 1.0, 50.0])[:, None, None]
    stacked = orthogonalize(gs, dtype=torch.float32)
    for g, u in zip(gs, stacked):
        assert torch.allclose(u, orthogonalize(g, dtype=torch.float32), atol=1e-5)


def test_groups_muon_for_block_matrices_adamw_for_the_rest() -> None:
    model = tiny()
    opt = make_optimizer(model, TrainConfig(), CPU)
    adam, muon = opt.optimizers
    assert isinstance(adam, torch.optim.AdamW) and isinstance(muon, Muon)
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    expected = {id(p) for n, p in model.layers.named_parameters() if p.dim() == 2}
    assert muon_ids == expected
    adam_ids = {id(p) for g in adam.param_groups for p in g["params"]}
    assert id(model.embed_tokens.weight) in adam_ids and id(model.lm_head.weight) in adam_ids
    assert id(model.layers[0].input_layernorm.weight) in adam_ids
    # Every trainable parameter is in exactly one group.
    assert len(adam_ids) + len(muon_ids) == len(list(model.parameters()))
    assert all("base_lr" in g for g in opt.param_groups)


class WithHead(torch.nn.Module):
    """A stage's extension: the GPT plus a scalar head (as a reward model has)."""

    def __init__(self) -> None:
        super().__init__()
        self.gpt = tiny(tied=True)
        self.score = torch.nn.Linear(32, 1, bias=False)


def test_unknown_parameters_go_to_adamw() -> None:
    model = WithHead()
    opt = make_optimizer(model, TrainConfig(), CPU)
    adam, muon = opt.optimizers
    adam_ids = {id(p) for g in adam.param_groups for p in g["params"]}
    assert id(model.score.weight) in adam_ids  # 2-D, but not a block matrix: AdamW, not Muon
    assert id(model.score.weight) not in {id(p) for g in muon.param_groups for p in g["params"]}
    n_trainable = len({id(p) for p in model.parameters()})
    assert sum(len(g["params"]) for g in opt.param_groups) == n_trainable


def test_adamw_mode_has_no_muon() -> None:
    opt = make_optimizer(tiny(), TrainConfig(optimizer="adamw"), CPU)
    assert len(opt.optimizers) == 1 and isinstance(opt.optimizers[0], torch.optim.AdamW)


def test_muon_trains_and_its_state_round_trips() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 64, (4, 16))
    y = torch.roll(x, -1, 1)  # learnable: predict the next token of a fixed batch

    def steps(model: GPT, opt, n: int) -> list[float]:
        out = []
        for _ in range(n):
            loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(loss.item())
        return out

    cfg = TrainConfig(matrix_lr=0.02)
    a = tiny()
    opt_a = make_optimizer(a, cfg, CPU)
    first = steps(a, opt_a, 5)
    b = tiny()
    b.load_state_dict(a.state_dict())
    opt_b = make_optimizer(b, cfg, CPU)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if through a file: no shared tensors
    assert steps(a, opt_a, 20) == steps(b, opt_b, 20)  # momentum buffers and Adam moments came along
    assert a(x, y).item() < first[0] - 1.0


def test_momentum_warms_up() -> None:
    cfg = TrainConfig(muon_momentum=0.95, muon_momentum_warmup=100)
    assert muon_momentum(0, cfg) == pytest.approx(0.85)
    assert muon_momentum(50, cfg) == pytest.approx(0.90)
    assert muon_momentum(500, cfg) == pytest.approx(0.95)
