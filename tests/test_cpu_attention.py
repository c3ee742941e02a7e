"""The bf16 CPU training attention: exact attention's values and gradients, compiled too, and
taken only where it fits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_kernels

from chatsmith import kernels
from chatsmith.common.device import autocast
from chatsmith.kernels.cpu import train_attention as cpu_attention
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig

pytestmark = needs_kernels


def qkv(B: int = 2, H: int = 4, T: int = 48, D: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, T, D, generator=g).to(torch.bfloat16).requires_grad_() for _ in range(3)]


def run(f, q, k, v, dout) -> list[torch.Tensor]:
    """The output and the gradients of q, k, v, as float32."""
    for t in (q, k, v):
        t.grad = None
    out = f(q, k, v)
    out.backward(dout)
    return [t.detach().float() for t in (out, q.grad, k.grad, v.grad)]


def exact(q, k, v):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)


@pytest.mark.parametrize("compiled", [False, True])
def test_values_and_gradients_are_exact_attention_to_bf16_precision(compiled: bool) -> None:
    q, k, v = qkv()
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    want = run(exact, q, k, v, dout)
    f = torch.compile(cpu_attention.causal_attention) if compiled else cpu_attention.causal_attention
    got = run(f, q, k, v, dout)
    for name, g, w in zip(("output", "dq", "dk", "dv"), got, want):
        # A few bf16 roundings off, as SDPA's own bf16 kernel is; a wrong mask or scale is off by O(1).
        assert (g - w).abs().max() <= 0.02 * w.abs().max() + 0.02, name


def test_only_cpu_training_of_plain_multi_head_attention_takes_it() -> None:
    q, k, v = qkv()
    assert cpu_attention.fits(q, k, v)
    with torch.no_grad():
        assert not cpu_attention.fits(q, k, v)  # inference and evaluation: SDPA's faster forward
    assert not cpu_attention.fits(q.detach(), k, v)
    assert not cpu_attention.fits(q, k[:, :2], v[:, :2])  # grouped kv heads
    assert not cpu_attention.fits(q, k, v.float())  # a float32 run
    long = torch.zeros(1, 1, 1, 8, requires_grad=True).expand(16, 16, 2048, 8).to(torch.bfloat16)
    assert not cpu_attention.fits(long, long, long)  # its probabilities would exceed MAX_BYTES


def test_a_bf16_training_step_takes_it_and_matches_sdpa(monkeypatch) -> None:
    """Under bf16 autocast the model prepared for CPU training trains through it; the loss
    and gradients are those of the same model through SDPA, to bf16 precision."""
    cfg = GPTConfig(
        vocab_size=128, n_layer=2, n_embd=64, n_head=4, n_kv_head=4, head_dim=16,
        intermediate_size=128, seq_len=32,
    )  # fmt: skip
    x = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    calls = []
    real = cpu_attention.causal_attention
    monkeypatch.setattr(cpu_attention, "causal_attention", lambda *a: calls.append(1) or real(*a))

    def loss_and_grads(use_rows: bool) -> tuple[float, torch.Tensor]:
        model = build_model(cfg, seed=3)
        assert kernels.prepare(model, "train")
        with torch.no_grad():  # o_proj starts at zero, which would leave q_proj without a gradient
            for block in model.layers:
                block.self_attn.o_proj.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
        monkeypatch.setattr(cpu_attention, "MAX_BYTES", cpu_attention.MAX_BYTES if use_rows else 0)
        with autocast(torch.device("cpu"), torch.bfloat16):
            loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        return float(loss), model.layers[0].self_attn.q_proj.weight.grad

    rows_loss, rows_grad = loss_and_grads(True)
    assert len(calls) == cfg.n_layer
    sdpa_loss, sdpa_grad = loss_and_grads(False)
    assert len(calls) == cfg.n_layer  # the SDPA run did not take it
    assert abs(rows_loss - sdpa_loss) < 1e-2
    assert sdpa_grad.abs().max() > 0
    assert (rows_grad - sdpa_grad).abs().max() <= 0.05 * sdpa_grad.abs().max()
