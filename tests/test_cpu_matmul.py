"""chatsmith's bf16 CPU matmul (model/cpu_matmul.py) against float64, and the model packed for it."""

from __future__ import annotations

import pytest
import torch
from conftest import peaky_engine_model

from chatsmith.engine.decode import CompiledDecode
from chatsmith.model import cpu_matmul
from chatsmith.model.gpt import Linear
from chatsmith.model.kv_cache import SlotKVCache


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    if not torch.cpu._is_avx512_bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16: the engine keeps oneDNN's matmuls (nothing to test)")
    # A machine with the instructions and the compiler inductor needs must build it.
    assert cpu_matmul.available(), "the bf16 matmul did not build (see the warning above)"


def within_rounding(y: torch.Tensor, ref: torch.Tensor) -> bool:
    """y (bf16) is ref (float64) rounded to bf16, give or take one unit in its last place."""
    return bool(((y.double() - ref).abs() <= ref.abs() * 2**-7 + 1e-6).all())


# Rows: tails of 1-3 under the 4-row pass, and more than one 64-row task. Columns: whole
# tiles, a tile cut short, fewer than one block. K: one pair, and odd counts of pairs.
@pytest.mark.parametrize(
    ("M", "N", "K"), [(1, 768, 256), (3, 70, 18), (5, 16, 2), (33, 4096, 64), (130, 200, 90)]
)
def test_matches_float64_within_bf16_rounding(M: int, N: int, K: int) -> None:
    g = torch.Generator().manual_seed(M * N + K)
    x = torch.randn(M, K, generator=g).bfloat16()
    w = torch.randn(N, K, generator=g).bfloat16()
    packed = cpu_matmul.pack(w)
    assert packed is not None and packed.size(0) * 16 % cpu_matmul.TILE == 0
    y = cpu_matmul.linear(x, w, packed)
    assert y.shape == (M, N) and y.dtype == torch.bfloat16
    assert within_rounding(y, x.double() @ w.double().T)


def test_a_rows_result_does_not_depend_on_the_other_rows() -> None:
    # Each row is summed in the same order at any M: a sequence decodes the same numbers
    # alone or among 31 others, as far as the matmuls go.
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(37, 256, generator=g).bfloat16(), torch.randn(768, 256, generator=g).bfloat16()
    packed = cpu_matmul.pack(w)
    y = cpu_matmul.linear(x, w, packed)
    for rows in (slice(5, 6), slice(0, 4), slice(30, 37)):
        assert torch.equal(cpu_matmul.linear(x[rows], w, packed), y[rows])


def test_leading_dims_and_bias() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 32, generator=g).bfloat16()
    w, b = torch.randn(48, 32, generator=g).bfloat16(), torch.randn(48, generator=g).bfloat16()
    y = cpu_matmul.linear(x, w, cpu_matmul.pack(w), b)
    assert y.shape == (2, 7, 48)
    assert torch.allclose(y.float(), torch.nn.functional.linear(x, w, b).float(), rtol=2**-6, atol=2**-6)


def test_what_the_kernel_does_not_take_falls_back_to_f_linear() -> None:
    assert cpu_matmul.pack(torch.randn(64, 32)) is None  # float32
    assert cpu_matmul.pack(torch.randn(64, 31).bfloat16()) is None  # an odd K
    w = torch.randn(64, 32).bfloat16()
    x = torch.randn(3, 32)  # float32 input with a packed weight
    assert torch.equal(
        cpu_matmul.linear(x, w.float(), cpu_matmul.pack(w)), torch.nn.functional.linear(x, w.float())
    )


def test_a_weight_that_was_not_packed_is_refused_clearly() -> None:
    x, w = torch.randn(2, 32).bfloat16(), torch.randn(64, 32).bfloat16()
    with pytest.raises(RuntimeError, match=r"packed by cpu_matmul\.pack"):
        torch.ops.chatsmith_cpu.bf16_matmul(x, w, 64)
    with pytest.raises(RuntimeError, match="columns"):
        torch.ops.chatsmith_cpu.bf16_matmul(torch.randn(2, 30).bfloat16(), cpu_matmul.pack(w), 64)


@torch.inference_mode()
def test_a_packed_model_gives_the_logits_of_the_unpacked_one(tiny_tok) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=3).bfloat16()
    keys = set(model.state_dict())
    ids = torch.randint(10, tiny_tok.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    want = model(ids)
    model.fuse_projections()
    model.pack_matmuls()
    packed = [m for m in model.modules() if isinstance(m, Linear) and m.packed is not None]
    assert model.lm_head in packed and model.layers[0].self_attn.o_proj in packed
    assert model.layers[0].self_attn.qkv_packed is not None and model.layers[0].mlp.gate_up_packed is not None
    assert set(model.state_dict()) == keys  # the packed copies are not saved
    got = model(ids)
    # Both sum in float32 and round each projection to bf16 (identical on the machine this
    # was written on; another oneDNN kernel may sum in another order).
    assert (got - want).abs().max() <= 0.01 * want.abs().max()


@torch.inference_mode()
def test_the_frozen_bf16_decode_step_packs_the_weights_and_keeps_the_logits(tiny_tok) -> None:
    packed = peaky_engine_model(tiny_tok.vocab_size, seed=5).bfloat16()
    plain = peaky_engine_model(tiny_tok.vocab_size, seed=5).bfloat16()  # never packed: oneDNN
    c = plain.cfg
    caches = [
        SlotKVCache(4, c.n_layer, c.n_kv_head, c.head_dim, c.seq_len, dtype=torch.bfloat16) for _ in "ab"
    ]
    g = torch.Generator().manual_seed(4)
    for slot, n in enumerate((5, 11, 19)):  # the same prompts in both caches
        ids = torch.randint(10, c.vocab_size, (1, n), generator=g)
        for cache in caches:
            cache.bind_prefill(slot, n)
            plain.hidden_states(ids, cache=cache)
    dec = CompiledDecode(packed, caches[1], freeze=True)
    assert packed.lm_head.packed is not None and packed.layers[0].mlp.gate_up_packed is not None
    ids = torch.tensor([3, 9, 27])
    for _ in range(3):  # the stored keys of one step feed the next
        caches[0].bind_decode(3)
        want = plain.lm_head(plain.hidden_states(ids[:, None], cache=caches[0])[:, 0]).float()
        got = dec(ids)
        # Measured 1.1 % of the largest logit: the graph's fused bf16 roundings, not the kernel.
        assert (got - want).abs().max() < 0.05 * want.abs().max()
        ids = want.argmax(-1)
