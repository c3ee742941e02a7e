"""A model switched to 8-bit weights (`--weights int8`): its greedy tokens against the same
model holding the dequantized weights, what the engine's later prepare keeps, and the flag
from the command line to the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import needs_kernels, peaky_engine_model

from chatsmith import kernels
from chatsmith.bench.engine_side import _start_engine
from chatsmith.checkpoint import save_checkpoint
from chatsmith.cli import build_parser
from chatsmith.kernels.cpu import build, int8
from chatsmith.kernels.cpu.prepare import weights_of
from chatsmith.model.gpt import GPT

pytestmark = needs_kernels


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    assert build.load(), "the CPU kernels did not build (see the warning above)"


def dequantized_copy(model: GPT) -> GPT:
    """The plain model with each projection's weight replaced by q * scale (lm_head untied)."""
    ref = peaky_engine_model(model.cfg.vocab_size, seed=0)
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.Linear):
                q, s = int8.quantize(m.weight)
                w = (q.view(*s.shape, -1).float() * s[..., None]).view_as(m.weight)
                m.weight = nn.Parameter(w)  # a new tensor: the embedding keeps the original
    return ref


def greedy(model: GPT, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        for _ in range(n):
            ids = [*ids, int(model(torch.tensor([ids]))[0, -1].argmax())]
    return ids


def test_int8_greedy_tokens_equal_the_dequantized_weights(tiny_tok) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=7)
    keys = set(model.state_dict())
    ref = dequantized_copy(model)
    assert kernels.set_weights(model, "int8") and weights_of(model) == "int8"
    assert isinstance(model.layers[1].mlp.down_proj, int8.Int8Linear)
    assert set(model.state_dict()) == keys  # checkpoints and exports do not change
    prompt = torch.randint(10, tiny_tok.vocab_size, (9,), generator=torch.Generator().manual_seed(1)).tolist()
    assert greedy(model, prompt, 12) == greedy(ref, prompt, 12)
    x = torch.tensor([prompt])
    with torch.inference_mode():
        want, got = ref(x), model(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()  # float32: summation order only


def test_the_engines_prepare_keeps_int8_and_bf16_undoes_it(tiny_tok) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=8)
    kernels.set_weights(model, "int8")
    model.bfloat16()  # as the engine casts it: int8 copies and bf16-exact scales unchanged
    kernels.prepare(model, "serve", freeze=True, kv_dtype=torch.bfloat16)
    assert weights_of(model) == "int8" and isinstance(model.layers[0].self_attn, int8.Int8Attention)
    assert model.layers[0].self_attn.qkv_scale.dtype == torch.bfloat16
    kernels.prepare(model, "serve", freeze=True, kv_dtype=torch.bfloat16, weights="bf16")
    assert weights_of(model) == "bf16" and not isinstance(model.layers[0].self_attn, int8.Int8Attention)


def test_bf16_or_switched_off_leaves_the_model(tiny_tok, monkeypatch) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=9)
    assert not kernels.set_weights(model, "bf16") and weights_of(model) == "bf16"
    monkeypatch.setenv(kernels.ENV, "0")
    assert not kernels.set_weights(model, "int8") and weights_of(model) == "bf16"
    with pytest.raises(ValueError, match="int4"):
        kernels.set_weights(model, "int4")


@pytest.mark.parametrize("verb", ["chat", "serve", "eval"])
def test_the_flag_is_offered_and_defaults_to_bf16(verb: str) -> None:
    p = build_parser()
    assert p.parse_args([verb, "--weights", "int8"]).weights == "int8"
    assert p.parse_args([verb]).weights == "bf16"
    with pytest.raises(SystemExit):
        p.parse_args([verb, "--weights", "int4"])


def test_bench_generates_engine_loads_the_model_with_int8_weights(tiny_tok, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(path, peaky_engine_model(tiny_tok.vocab_size, seed=10).eval(), tiny_tok, {"step": 1})
    for weights in ("int8", "bf16"):
        eng, _ = _start_engine(str(path), "cpu", "float32", (1,), False, {}, weights)
        try:
            assert weights_of(eng.model) == weights
        finally:
            eng.shutdown(drain=False)


def test_the_server_backend_switches_the_model(tiny_tok) -> None:
    from chatsmith.serve.backend import Backend

    model = peaky_engine_model(tiny_tok.vocab_size, seed=11)
    b = Backend.from_model(model, tiny_tok, weights="int8")
    try:
        assert b.engine is not None and weights_of(b.engine.model) == "int8"
    finally:
        b.shutdown(drain=False)


@torch.inference_mode()
def test_the_compiled_decode_step_keeps_int8_and_its_greedy_tokens(tiny_tok) -> None:
    from chatsmith.engine.decode import CompiledDecode
    from chatsmith.engine.runner import eager_decode, eager_prefill
    from chatsmith.model.kv_cache import SlotKVCache

    models = [peaky_engine_model(tiny_tok.vocab_size, seed=12) for _ in "ab"]
    for m in models:
        kernels.set_weights(m, "int8")
    c = models[0].cfg
    caches = [SlotKVCache(2, c.n_layer, c.n_kv_head, c.head_dim, c.seq_len) for _ in "ab"]
    prompts = [[5, 17, 33, 8, 90], [44, 2, 71]]
    for m, cache in zip(models, caches, strict=True):
        eager_prefill(m, cache, list(enumerate(prompts)))
    dec = CompiledDecode(models[1], caches[1], freeze=True)  # traced through the int8 op
    assert weights_of(models[1]) == "int8"
    ids = torch.tensor([3, 9])
    for _ in range(4):
        want = eager_decode(models[0], caches[0], ids.tolist())
        got = dec(ids)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        ids = want.argmax(-1)
