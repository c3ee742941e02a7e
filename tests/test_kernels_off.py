"""With the CPU kernels switched off (CHATSMITH_KERNELS=0: the plain PyTorch path a CUDA machine
runs), greedy generation gives the same tokens and training steps the same losses (within 1e-4)
as with them on. Each side builds its own model, so nothing prepared by one leaks into the other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import peaky_engine_model

from chatsmith import kernels
from chatsmith.common.device import autocast
from chatsmith.engine.engine import Engine
from chatsmith.engine.sampling import SamplingParams
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer

pytestmark = pytest.mark.slow


def greedy_tokens(tok: BPETokenizer) -> list[list[int]]:
    model = peaky_engine_model(tok.vocab_size, seed=11)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(10, tok.vocab_size, (n,), generator=g).tolist() for n in (5, 12, 30)]
    with Engine(model, tok, max_batch=4, compile=True) as eng:
        results = eng.generate(prompts, SamplingParams(max_new_tokens=20, ignore_eos=True))
    return [r[0].token_ids for r in results]


def training_losses(dtype: torch.dtype) -> list[float]:
    """Three AdamW steps of a small model on one fixed batch (so the loss falls), prepared for
    training as the loop does."""
    cfg = GPTConfig(
        vocab_size=256, n_layer=2, n_embd=64, n_head=4, n_kv_head=4, head_dim=16,
        intermediate_size=128, seq_len=64,
    )  # fmt: skip
    model = build_model(cfg, seed=4)
    assert kernels.prepare(model, "train") == kernels.enabled()  # on a CPU the kernel is in when on
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (4, 65), generator=torch.Generator().manual_seed(5))
    out = []
    for _ in range(3):
        with autocast(torch.device("cpu"), dtype):
            loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(float(loss.detach()))
    return out


def both(monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    monkeypatch.setenv(kernels.ENV, "1")
    on = fn(*args)
    monkeypatch.setenv(kernels.ENV, "0")
    assert not kernels.enabled()
    return on, fn(*args)


@pytest.mark.timeout(1800)  # two compilations of the decode step
def test_greedy_generation_is_the_same_with_the_kernels_off(monkeypatch, tiny_tok) -> None:
    on, off = both(monkeypatch, greedy_tokens, tiny_tok)
    assert on == off and all(len(t) == 20 for t in on)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_training_steps_give_the_same_losses_with_the_kernels_off(monkeypatch, dtype: torch.dtype) -> None:
    on, off = both(monkeypatch, training_losses, dtype)
    print(f"{dtype}: kernels on {on}, off {off}")
    assert max(abs(a - b) for a, b in zip(on, off)) < 1e-4, (on, off)
    assert on[-1] < on[0]  # the steps trained
