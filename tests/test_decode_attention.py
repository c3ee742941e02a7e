"""The C++ decode and prefill attention (kernels/cpu/ops.py) against float64 attention."""

from __future__ import annotations

import pytest
import torch
from conftest import caches_with_prompts, needs_kernels, peaky_engine_model

from chatsmith import kernels
from chatsmith.engine.decode import CompiledDecode
from chatsmith.kernels.cpu import build, ops
from chatsmith.model.kv_cache import SlotKVCache

pytestmark = needs_kernels


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    # Inductor needs the same C++ compiler for the compiled decode step, so a machine that
    # runs these tests can build the kernel: failing to is an error here, not a skip.
    assert build.load(), "the CPU kernels did not build (see the warning above)"


def reference(q, k_new, v_new, K, V, pos, scale):
    """Each query over its slot's positions < pos and its own new key, in float64."""
    n, H, D = q.shape
    G = K.size(2)
    out = torch.empty(n, H, D, dtype=torch.float64)
    for b in range(n):
        L = int(pos[b])
        keys = torch.cat((K[b, :L].transpose(0, 1), k_new[b, :, None]), 1).double()  # (G, L+1, D)
        vals = torch.cat((V[b, :L].transpose(0, 1), v_new[b, :, None]), 1).double()
        keys, vals = keys.repeat_interleave(H // G, 0), vals.repeat_interleave(H // G, 0)
        w = torch.softmax(q[b].double()[:, None] @ keys.transpose(-1, -2) * scale, -1)  # (H, 1, L+1)
        out[b] = (w @ vals)[:, 0]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# Query heads per task (H, or H / parts when heads are split) of 4, 8 and 16 take the bf16
# kernel's compiled-in loop; 6 and 2 its general one, and 8 heads of 128 four value passes.
@pytest.mark.parametrize(
    ("H", "G", "D"), [(4, 2, 16), (8, 8, 32), (4, 1, 64), (8, 2, 128), (6, 3, 32), (16, 4, 32)]
)
@pytest.mark.parametrize("lengths", ["mixed", "one long", "few long"])
def test_kernel_matches_float64_attention(dtype, H: int, G: int, D: int, lengths: str) -> None:
    g = torch.Generator().manual_seed(H * 100 + D)
    pos = {
        # Lengths on both sides of the 16-key blocks; 0 attends to its own key only.
        "mixed": torch.tensor([0, 1, 15, 16, 17, 33, 47, 69]),
        # Fewer sequences than threads on a long context: each one's heads split across them.
        "one long": torch.tensor([2500]),
        "few long": torch.tensor([2100, 40]),
    }[lengths]
    n, slots, max_len = pos.numel(), 9, int(pos.max()) + 2
    K, V = (torch.randn(slots, max_len, G, D, generator=g).to(dtype) for _ in range(2))
    q = torch.randn(n, H, D, generator=g).to(dtype)
    k_new, v_new = (torch.randn(n, G, D, generator=g).to(dtype) for _ in range(2))
    # Stale numbers past each length must not be read: make them huge.
    for b, L in enumerate(pos.tolist()):
        K[b, L:] = 1e4
        V[b, L:] = 1e4
    got = ops.decode_attention(q, k_new, v_new, K, V, pos, D**-0.5)
    want = reference(q, k_new, v_new, K, V, pos, D**-0.5)
    assert got.dtype == dtype and got.shape == (n, H, D)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the output's own rounding
    assert torch.allclose(got.double(), want, atol=tol, rtol=tol)


def test_kernel_reads_strided_layer_views_of_the_cache() -> None:
    """The decode step hands it one layer of the (layers, slots, max_len, G, D) storage."""
    g = torch.Generator().manual_seed(3)
    store = torch.randn(3, 5, 40, 2, 32, generator=g)
    q, k_new, v_new = torch.randn(4, 2, 32, generator=g), torch.randn(4, 2, 32), torch.randn(4, 2, 32)
    pos = torch.tensor([3, 20, 39, 7])
    got = ops.decode_attention(q, k_new, v_new, store[1], store[2], pos, 0.2)
    want = reference(q, k_new, v_new, store[1].clone(), store[2].clone(), pos, 0.2)
    assert torch.allclose(got.double(), want, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_reads_new_keys_and_values_inside_the_fused_projection(dtype) -> None:
    """k_new, v_new as the compiled step hands them over: views into each sequence's row of
    the fused q/k/v projection, read in place; heads out of order still get copied first."""
    g = torch.Generator().manual_seed(4)
    n, H, G, D = 5, 8, 2, 32
    K, V = (torch.randn(6, 50, G, D, generator=g).to(dtype) for _ in range(2))
    qkv = torch.randn(n, (H + 2 * G) * D, generator=g).to(dtype)
    q = qkv[:, : H * D].reshape(n, H, D)
    k_new = qkv[:, H * D : (H + G) * D].view(n, G, D)
    v_new = qkv[:, (H + G) * D :].view(n, G, D)
    pos = torch.tensor([0, 3, 17, 33, 49])
    want = reference(q, k_new, v_new, K, V, pos, D**-0.5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for kn, vn in ((k_new, v_new), (k_new.flip(1), v_new.flip(1))):
        got = ops.decode_attention(q, kn, vn, K, V, pos, D**-0.5)
        assert torch.allclose(got.double(), reference(q, kn, vn, K, V, pos, D**-0.5), atol=tol, rtol=tol)
    assert not torch.allclose(reference(q, k_new.flip(1), v_new.flip(1), K, V, pos, D**-0.5), want, atol=tol)


def test_kernel_refuses_a_position_outside_the_cache() -> None:
    K = torch.zeros(2, 8, 1, 16)  # (slots, max_len, G, D)
    q, kv = torch.zeros(2, 1, 16), torch.zeros(2, 1, 16)
    with pytest.raises(RuntimeError, match="outside a cache of 8"):
        ops.decode_attention(q, kv, kv, K, K, torch.tensor([3, 8]), 1.0)
    with pytest.raises(RuntimeError, match="share one dtype"):
        ops.decode_attention(q.bfloat16(), kv, kv, K, K, torch.tensor([3, 4]), 1.0)


@torch.inference_mode()
def test_compiled_step_with_the_kernel_matches_pytorch_attention(tiny_tok, monkeypatch) -> None:
    """The same logits, step after step, as the compiled step with PyTorch's attention."""
    model, plain = (peaky_engine_model(tiny_tok.vocab_size, seed=11) for _ in range(2))
    caches = caches_with_prompts(model, [3, 18, 41, 1])
    with_kernel = CompiledDecode(model, caches[0], freeze=False)
    with monkeypatch.context() as m:  # its twin, with the attention left plain
        m.setenv(kernels.ENV, "0")
        without = CompiledDecode(plain, caches[1], freeze=False)
    assert with_kernel.kernel and not without.kernel
    ids = torch.tensor([5, 6, 7, 8])
    for _ in range(4):
        a, b = with_kernel(ids), without(ids)
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        ids = a.argmax(-1)
    assert torch.allclose(caches[0].k, caches[1].k, atol=1e-5)


@torch.inference_mode()
def test_without_the_kernel_the_step_uses_pytorch_attention(tiny_tok, monkeypatch) -> None:
    """A machine that cannot build it (load() False) still decodes, with the plain attention."""
    monkeypatch.setitem(build._state, "ok", False)
    model = peaky_engine_model(tiny_tok.vocab_size, seed=11)
    cache, _ = caches_with_prompts(model, [3])
    dec = CompiledDecode(model, cache, freeze=False)
    assert not dec.kernel
    assert dec(torch.tensor([7])).shape == (1, model.cfg.vocab_size)


def test_storing_a_step_in_cpp_equals_indexing() -> None:
    """SlotKVCache.append: the C++ copy (store_decoded) and the indexed store agree."""
    g = torch.Generator().manual_seed(5)
    caches = [SlotKVCache(5, 3, 2, 32, 20, dtype=torch.bfloat16) for _ in range(2)]
    k, v = (torch.randn(3, 4, 2, 32, generator=g) for _ in range(2))  # (layers, n, G, D), float32
    for cache, cpp in zip(caches, (True, False)):
        cache.lengths = [3, 0, 19, 1, 0]
        cache.append(k, v, torch.tensor(cache.lengths[:4]), ops.store_decoded if cpp else None)
    assert torch.equal(caches[0].k, caches[1].k) and torch.equal(caches[0].v, caches[1].v)
    assert caches[0].lengths == caches[1].lengths == [4, 1, 20, 2, 0]
    assert torch.equal(caches[0].k[1, 2, 19], k[1, 2].bfloat16())  # layer 1, slot 2, position 19
    with pytest.raises(RuntimeError, match="outside a cache of 20"):
        kb, vb, past_end = k.bfloat16(), v.bfloat16(), torch.tensor([0, 0, 20, 0])
        ops.store_decoded(caches[0].k, caches[0].v, kb, vb, past_end)


def prefill_reference(q, k, v, K, V, slots, past, lens, scale):
    """Each prompt causally over its own keys after its slot's first past[s] positions, in float64."""
    H, T, D = q.shape
    G = k.size(0)
    out = torch.empty(H, T, D, dtype=torch.float64)
    at = 0
    for s, P, n in zip(slots.tolist(), past.tolist(), lens.tolist()):
        keys = torch.cat((K[s, :P].transpose(0, 1), k[:, at : at + n]), 1).double()  # (G, P + n, D)
        vals = torch.cat((V[s, :P].transpose(0, 1), v[:, at : at + n]), 1).double()
        keys, vals = keys.repeat_interleave(H // G, 0), vals.repeat_interleave(H // G, 0)
        mask = torch.ones(n, P + n, dtype=torch.bool).tril(P)
        w = (q[:, at : at + n].double() @ keys.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
        out[:, at : at + n] = w.softmax(-1) @ vals
        at += n
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# 8 heads of 32 (the demo model), grouped heads, a head count off the compiled-in ones, and
# a head size of two vectors.
@pytest.mark.parametrize(("H", "G", "D"), [(8, 8, 32), (8, 2, 32), (6, 3, 64), (4, 1, 128)])
def test_prefill_attention_matches_float64_attention(dtype, H: int, G: int, D: int) -> None:
    """Short prompts (per-token tasks on bf16), a long one (SDPA), held prefixes, in one call;
    q, k, v strided as the model hands them over: (T, heads, D) storage seen as (heads, T, D)."""
    g = torch.Generator().manual_seed(H * 10 + D)
    slots, past = torch.tensor([3, 0, 5, 1, 2]), torch.tensor([0, 9, 0, 40, 0])
    lens = torch.tensor([1, 17, 64, 5, 520])  # the last is past the per-token tasks' limit
    T, max_len = int(lens.sum()), 600
    K, V = (torch.randn(6, max_len, G, D, generator=g).to(dtype) for _ in range(2))
    q = torch.randn(T, H, D, generator=g).to(dtype).transpose(0, 1)
    k, v = (torch.randn(T, G, D, generator=g).to(dtype).transpose(0, 1) for _ in range(2))
    for s, P in zip(slots.tolist(), past.tolist()):  # what a slot holds past its prefix is never read
        K[s, P:] = 1e4
        V[s, P:] = 1e4
    got = torch.ops.chatsmith_cpu.prefill_attention(q, k, v, K, V, slots, past, lens, D**-0.5)
    want = prefill_reference(q, k, v, K, V, slots, past, lens, D**-0.5)
    assert got.dtype == dtype and got.shape == (H, T, D) and got.is_contiguous()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(got.double(), want, atol=tol, rtol=tol)
