"""The network: loss at init, cached decoding, overfitting, GQA, meta-device build."""

from __future__ import annotations

import math

import pytest
import torch

from chatsmith.engine.generate import generate_uncached
from chatsmith.engine.runner import eager_decode, eager_prefill
from chatsmith.kernels.cpu.prepare import fuse_projections
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig
from chatsmith.model.kv_cache import SlotKVCache


def tiny_cfg(**kw) -> GPTConfig:
    base = dict(
        vocab_size=512,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=192,
        seq_len=64,
    )
    base.update(kw)
    return GPTConfig(**base)


@pytest.mark.parametrize("tied", [False, True])
def test_loss_at_init_is_about_ln_vocab(tied: bool) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(vocab_size=4096, n_embd=128, n_head=4, n_kv_head=4, head_dim=32, tie_embeddings=tied)
    model = build_model(cfg, seed=0)
    x = torch.randint(0, cfg.vocab_size, (4, 64))
    y = torch.randint(0, cfg.vocab_size, (4, 64))
    loss = model(x, y).item()
    assert abs(loss - math.log(cfg.vocab_size)) / math.log(cfg.vocab_size) < 0.10, loss


def test_nothing_is_allocated_before_init() -> None:
    model = build_model(tiny_cfg(), seed=0)
    assert all(not p.is_meta for p in model.parameters())
    assert model.rope_cos.shape == (2 * 64, 16)


def test_tied_embedding_is_one_tensor() -> None:
    model = build_model(tiny_cfg(tie_embeddings=True), seed=0)
    assert model.lm_head.weight is model.embed_tokens.weight


def test_cached_forward_equals_full_forward() -> None:
    """Prefill in two chunks, then one token at a time: logits match the full pass (two
    sequences, each in its own cache slot)."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), seed=1)
    # Random weights everywhere (the zero-initialised projections would hide bugs).
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    x = torch.randint(0, 512, (2, 20))
    full = model(x)
    cfg = model.cfg
    cache = SlotKVCache(2, cfg.n_layer, cfg.n_kv_head, cfg.head_dim, 32)

    def chunk(a: int, b: int) -> torch.Tensor:  # (2, b - a, V): each slot's logits of every position
        rows = [eager_prefill(model, cache, [(s, x[s, a:b].tolist())], last_only=False) for s in (0, 1)]
        return torch.stack(rows)

    parts = [chunk(0, 7), chunk(7, 12)]
    parts += [eager_decode(model, cache, x[:, t].tolist())[:, None] for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


def test_greedy_generation_with_cache_equals_full_passes() -> None:
    from chatsmith.engine.generate import Generator
    from chatsmith.engine.sampling import SamplingParams

    model = build_model(tiny_cfg(), seed=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)

    class Tok:  # the generator only needs these from a tokenizer here
        im_end_id = 10**9

        def token_id(self, s: str) -> int:
            return 10**9 + 1

        def decode(self, ids, **_):
            return ""

    gen = Generator(model, Tok())  # type: ignore[arg-type]
    prompt = [5, 17, 99, 3, 250, 7]
    cached = [e.token for e in gen.stream(prompt, SamplingParams(max_new_tokens=40)) if e.kind == "token"]
    assert cached == generate_uncached(model, prompt, 40)
    assert len(set(cached)) > 3  # a degenerate constant sequence would prove little


def test_kv_cache_overflow_is_an_error() -> None:
    model = build_model(tiny_cfg(), seed=0)
    cfg = model.cfg
    cache = SlotKVCache(1, cfg.n_layer, cfg.n_kv_head, cfg.head_dim, 4)
    with pytest.raises(ValueError, match="overflow"):
        eager_prefill(model, cache, [(0, [0] * 5)])


def test_a_single_batch_overfits() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), seed=0)
    x = torch.randint(0, 512, (4, 32))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.5 and loss.item() < 0.05, (first, loss.item())


def test_ignored_targets_do_not_count() -> None:
    model = build_model(tiny_cfg(), seed=0)
    x = torch.randint(0, 512, (1, 16))
    y = torch.randint(0, 512, (1, 16))
    y_masked = y.clone()
    y_masked[:, :8] = -1
    full = model(x, y, reduction="none").view(1, 16)
    assert torch.allclose(model(x, y_masked), full[:, 8:].mean())


@torch.no_grad()
def test_fused_projections_give_the_same_logits_and_are_not_saved() -> None:
    cfg = GPTConfig(
        vocab_size=64,
        n_layer=2,
        n_embd=32,
        n_head=4,
        n_kv_head=2,
        head_dim=8,
        intermediate_size=48,
        seq_len=16,
        qkv_bias=True,
    )
    model = build_model(cfg, seed=0)
    for p in model.parameters():
        p.normal_(0, 0.3)
    x = torch.randint(0, 64, (2, 10))
    want = model(x)
    keys = set(model.state_dict())
    fuse_projections(model)
    assert torch.allclose(model(x), want, atol=1e-5)
    assert set(model.state_dict()) == keys  # checkpoints and exports do not change
