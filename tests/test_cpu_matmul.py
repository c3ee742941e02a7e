"""chatsmith's CPU matmuls (kernels/cpu/matmul.py) against float64, and the model packed for them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import needs_kernels, peaky_engine_model

from chatsmith.engine.decode import CompiledDecode
from chatsmith.engine.runner import eager_decode, eager_prefill
from chatsmith.kernels.cpu import build
from chatsmith.kernels.cpu import matmul as cpu_matmul
from chatsmith.kernels.cpu.modules import PackedLinear
from chatsmith.kernels.cpu.prepare import fuse_projections, pack_matmuls
from chatsmith.model.kv_cache import SlotKVCache

pytestmark = needs_kernels

BF16 = torch.cpu._is_avx512_bf16_supported()
needs_bf16 = pytest.mark.skipif(not BF16, reason="no AVX512-BF16: bf16 matmuls stay with oneDNN")


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    # A machine with the compiler inductor needs builds the kernels; failing is an error.
    assert build.load(), "the CPU kernels did not build (see the warning above)"
    if BF16:
        assert cpu_matmul.available(), "the build lacks the bf16 matmul on a CPU with AVX512-BF16"
    if cpu_matmul.f32_layout()[0] == 0:
        pytest.skip("a build without AVX2 or AVX-512: every matmul stays with oneDNN")


def within_rounding(y: torch.Tensor, ref: torch.Tensor) -> bool:
    """y (bf16) is ref (float64) rounded to bf16, give or take one unit in its last place."""
    return bool(((y.double() - ref).abs() <= ref.abs() * 2**-7 + 1e-6).all())


@needs_bf16
# Rows: tails of 1-3 under the 4-row pass, and more than one 64-row task. Columns: whole
# tiles, a tile cut short, fewer than one block. K: one pair, and odd counts of pairs.
@pytest.mark.parametrize(
    ("M", "N", "K"),
    [(1, 768, 256), (3, 70, 18), (5, 16, 2), (33, 4096, 64), (130, 200, 90), (17, 200, 96), (130, 70, 64)],
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


@needs_bf16
def test_a_rows_result_does_not_depend_on_the_other_rows() -> None:
    # Each row is summed in the same order at any M: a sequence decodes the same numbers
    # alone or among 31 others, as far as the matmuls go.
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(37, 256, generator=g).bfloat16(), torch.randn(768, 256, generator=g).bfloat16()
    packed = cpu_matmul.pack(w)
    y = cpu_matmul.linear(x, w, packed)
    for rows in (slice(5, 6), slice(0, 4), slice(30, 37)):
        assert torch.equal(cpu_matmul.linear(x[rows], w, packed), y[rows])


AMX = BF16 and "amx_bf16" in Path("/proc/cpuinfo").read_text()


@pytest.mark.skipif(not AMX, reason="no AMX on this CPU: every bf16 matmul takes vdpbf16ps")
def test_with_amx_the_kernel_is_chosen_by_k_alone() -> None:
    # K in whole steps of 32 goes through the tiles at every M, one row included (a row's
    # numbers must not change with the batch); other K through vdpbf16ps at every M.
    kind = torch.ops.chatsmith_cpu.bf16_matmul_kind
    assert (kind(64), kind(576), kind(90), kind(18)) == ("amx", "amx", "avx512_bf16", "avx512_bf16")


@pytest.mark.skipif(not AMX, reason="no AMX on this CPU")
def test_chatsmith_amx_0_keeps_every_call_on_vdpbf16ps() -> None:
    code = "from chatsmith.kernels.cpu import build; import torch; build.load(); "
    code += "print(torch.ops.chatsmith_cpu.bf16_matmul_kind(64))"
    env = {**os.environ, "CHATSMITH_AMX": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "avx512_bf16"


@needs_bf16
def test_leading_dims_and_bias() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 32, generator=g).bfloat16()
    w, b = torch.randn(48, 32, generator=g).bfloat16(), torch.randn(48, generator=g).bfloat16()
    y = cpu_matmul.linear(x, w, cpu_matmul.pack(w), b)
    assert y.shape == (2, 7, 48)
    assert torch.allclose(y.float(), torch.nn.functional.linear(x, w, b).float(), rtol=2**-6, atol=2**-6)


def test_what_the_kernels_do_not_take_falls_back_to_f_linear() -> None:
    assert cpu_matmul.pack(torch.randn(64, 32, dtype=torch.float64)) is None
    assert cpu_matmul.pack(torch.randn(64, 31).bfloat16()) is None  # an odd K in bf16
    w = torch.randn(64, 32)
    x = torch.randn(3, 32).bfloat16()  # a bf16 input with a float32 packing: F.linear's dtype error
    with pytest.raises(RuntimeError, match="dtype"):
        cpu_matmul.linear(x, w, cpu_matmul.pack(w))


# The float32 kernel takes up to 8 rows (tails under the 4-row pass, one row); more go to
# at::linear. Columns: whole tiles, a tile cut short, fewer than one vector.
@pytest.mark.parametrize(
    ("M", "N", "K"), [(1, 768, 256), (3, 70, 18), (8, 5, 7), (5, 4096, 64), (9, 200, 90)]
)
def test_float32_kernel_matches_float64(M: int, N: int, K: int) -> None:
    g = torch.Generator().manual_seed(M * N + K)
    x, w = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    y = torch.ops.chatsmith_cpu.f32_matmul(x, cpu_matmul.pack(w), w)
    assert y.shape == (M, N) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), x.double() @ w.double().T, rtol=1e-5, atol=1e-5)


def test_float32_rows_do_not_depend_on_the_other_rows_up_to_8() -> None:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 256, generator=g), torch.randn(768, 256, generator=g)
    packed = cpu_matmul.pack(w)
    y = torch.ops.chatsmith_cpu.f32_matmul(x, packed, w)
    for rows in (slice(5, 6), slice(0, 4), slice(1, 8)):
        assert torch.equal(torch.ops.chatsmith_cpu.f32_matmul(x[rows], packed, w), y[rows])


def ops_called(f) -> set[str]:
    with torch.profiler.profile() as prof:
        f()
    return {e.name for e in prof.events()}


def test_float32_linear_takes_the_kernel_for_one_row_only() -> None:
    # One row is batch-1 decoding; at more rows oneDNN's blocking wins (cpu_matmul._one_row).
    w = torch.randn(64, 32)
    packed = cpu_matmul.pack(w)
    for rows, kernel in ((1, True), (2, False), (32, False)):
        x = torch.randn(rows, 32)
        assert (
            "chatsmith_cpu::f32_matmul" in ops_called(lambda x=x: cpu_matmul.linear(x, w, packed))
        ) == kernel
        torch.testing.assert_close(cpu_matmul.linear(x, w, packed), x @ w.T, rtol=1e-5, atol=1e-5)


def test_a_float32_weight_that_was_not_packed_is_refused_clearly() -> None:
    x, w = torch.randn(2, 32), torch.randn(64, 32)
    with pytest.raises(RuntimeError, match=r"packed by kernels/cpu/matmul\.pack"):
        torch.ops.chatsmith_cpu.f32_matmul(x, w, w)


@needs_bf16
def test_a_weight_that_was_not_packed_is_refused_clearly() -> None:
    x, w = torch.randn(2, 32).bfloat16(), torch.randn(64, 32).bfloat16()
    with pytest.raises(RuntimeError, match=r"packed by kernels/cpu/matmul\.pack"):
        torch.ops.chatsmith_cpu.bf16_matmul(x, w, 64)
    with pytest.raises(RuntimeError, match="columns"):
        torch.ops.chatsmith_cpu.bf16_matmul(torch.randn(2, 30).bfloat16(), cpu_matmul.pack(w), 64)


@needs_bf16
@torch.inference_mode()
def test_a_packed_model_gives_the_logits_of_the_unpacked_one(tiny_tok) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=3).bfloat16()
    keys = set(model.state_dict())
    ids = torch.randint(10, tiny_tok.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    want = model(ids)
    fuse_projections(model)
    pack_matmuls(model)
    packed = [m for m in model.modules() if isinstance(m, PackedLinear) and m.packed is not None]
    assert model.lm_head in packed and model.layers[0].self_attn.o_proj in packed
    assert model.layers[0].self_attn.qkv_packed is not None and model.layers[0].mlp.gate_up_packed is not None
    assert set(model.state_dict()) == keys  # the packed copies are not saved
    got = model(ids)
    # Both sum in float32 and round each projection to bf16 (identical on the machine this
    # was written on; another oneDNN kernel may sum in another order).
    assert (got - want).abs().max() <= 0.01 * want.abs().max()


@needs_bf16
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
        ids = torch.randint(10, c.vocab_size, (n,), generator=g).tolist()
        for cache in caches:
            eager_prefill(plain, cache, [(slot, ids)])
    dec = CompiledDecode(packed, caches[1], freeze=True)
    assert packed.lm_head.packed is not None and packed.layers[0].mlp.gate_up_packed is not None
    ids = torch.tensor([3, 9, 27])
    for _ in range(3):  # the stored keys of one step feed the next
        want = eager_decode(plain, caches[0], ids.tolist())
        got = dec(ids)
        # Measured 1.1 % of the largest logit: the graph's fused bf16 roundings, not the kernel.
        assert (got - want).abs().max() < 0.05 * want.abs().max()
        ids = want.argmax(-1)
