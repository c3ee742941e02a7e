"""The C++ attention gives a query the same bits however its keys arrive: decoded one at a
time, prefilled whole, or prefilled after a cached prefix in any split (bf16, AVX512-BF16)."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_kernels

from chatsmith.kernels.cpu import build, matmul, ops

pytestmark = [needs_kernels, pytest.mark.skipif(not matmul.available(), reason="needs AVX512-BF16")]


def _prefill(q, k, v, Kc, Vc, slot: int, past: int) -> torch.Tensor:
    """One prompt (q (H, T, D), k, v (G, T, D)) after `past` cached positions of `slot`."""
    t = torch.tensor
    return ops.prefill_attention(q, k, v, Kc, Vc, t([slot]), t([past]), t([q.size(1)]))


@pytest.mark.parametrize(("H", "G", "D", "T"), [(9, 3, 64, 40), (4, 2, 32, 700), (8, 2, 64, 23)])
def test_a_token_attends_alike_decoded_prefilled_or_after_a_prefix(H: int, G: int, D: int, T: int) -> None:
    assert build.load()
    g = torch.Generator().manual_seed(H + T)
    q = torch.randn(H, T, D, generator=g).bfloat16()
    k, v = (torch.randn(G, T, D, generator=g).bfloat16() for _ in range(2))
    Kc = torch.zeros(2, T, G, D, dtype=torch.bfloat16)
    Vc = torch.zeros_like(Kc)
    Kc[1], Vc[1] = k.transpose(0, 1), v.transpose(0, 1)  # slot 1 holds the whole prompt
    whole = _prefill(q, k, v, Kc, Vc, 0, 0)  # slot 0: nothing cached, all keys new
    for split in (1, 17, T // 2, T - 1):  # the first `split` tokens cached, the rest new
        rest = _prefill(q[:, split:], k[:, split:], v[:, split:], Kc, Vc, 1, split)
        assert torch.equal(rest, whole[:, split:]), f"prefix of {split}"
    for p in (0, 5, T // 2, T - 1):  # decoding token p after p cached positions
        pos = torch.tensor([p])
        got = ops.decode_attention(q[None, :, p], k[None, :, p], v[None, :, p], Kc[1:], Vc[1:], pos, D**-0.5)
        assert torch.equal(got[0], whole[:, p]), f"decoding position {p}"
