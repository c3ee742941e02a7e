"""The compiled packed prefill (engine/prefill.py): the logits and cache of the eager one."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_kernels, peaky_engine_model

from chatsmith import kernels
from chatsmith.engine.engine import Engine
from chatsmith.engine.prefill import CompiledPrefill
from chatsmith.engine.runner import eager_prefill
from chatsmith.engine.sampling import SamplingParams
from chatsmith.kernels.cpu import build
from chatsmith.model.kv_cache import SlotKVCache

pytestmark = needs_kernels  # the compiled prefill exists for the C++ attention


@pytest.fixture(scope="module")
def model(tiny_tok):
    assert build.load(), "the attention kernels did not build (see the warning above)"
    return peaky_engine_model(tiny_tok.vocab_size, seed=7)


@pytest.fixture(scope="module")
def served(tiny_tok):
    """The same model prepared for the compiled graphs: its attention the C++ one."""
    m = peaky_engine_model(tiny_tok.vocab_size, seed=7)
    assert kernels.prepare(m, "serve", freeze=False, kv_dtype=torch.float32)
    return m


def two_caches(model) -> tuple[SlotKVCache, SlotKVCache]:
    c = model.cfg
    return tuple(SlotKVCache(6, c.n_layer, c.n_kv_head, c.head_dim, c.seq_len) for _ in range(2))


@torch.inference_mode()
def test_compiled_prefill_matches_the_eager_one_also_after_a_held_prefix(model, served) -> None:
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.randint(0, model.cfg.vocab_size, (n,), generator=g).tolist()  # noqa: E731
    ref, mine = two_caches(model)
    comp = CompiledPrefill(served, mine)
    # Slot 2 already holds 9 tokens (a reused prefix): its new prompt attends to them.
    first = [(2, rand(9))]
    eager_prefill(model, ref, first)
    eager_prefill(model, mine, first)
    for prompts in ([(0, rand(5)), (1, rand(12)), (2, rand(4))], [(3, rand(7))]):  # several, then one
        want = eager_prefill(model, ref, prompts)
        logits, top = comp(prompts)
        assert torch.allclose(logits, want, atol=1e-5, rtol=1e-5)
        assert torch.equal(top, want.argmax(-1))
    assert mine.lengths == ref.lengths == [5, 12, 13, 7, 0, 0]
    assert torch.allclose(mine.k, ref.k, atol=1e-5) and torch.allclose(mine.v, ref.v, atol=1e-5)


@torch.inference_mode()
def test_compiled_prefill_refuses_a_prompt_past_its_slot_before_running(served) -> None:
    _, cache = two_caches(served)
    comp = CompiledPrefill(served, cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        comp([(0, [1, 2]), (1, [3] * (served.cfg.seq_len + 1))])
    assert cache.lengths[0] == 0  # nothing stored


def test_a_compiled_engine_prefills_a_burst_through_the_graph(model, tiny_tok) -> None:
    g = torch.Generator().manual_seed(3)
    ps = [torch.randint(10, tiny_tok.vocab_size, (n,), generator=g).tolist() for n in (6, 11, 3, 17)]
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    with Engine(model, tiny_tok, max_batch=4) as eng:
        want = [r.result()[0].token_ids for r in [eng.submit(p, params, run_tools=False) for p in ps]]
    with Engine(model, tiny_tok, max_batch=4, compile=True) as eng:
        prefiller = eng.sched.runner.prefiller
        assert prefiller is not None
        calls = []
        run = prefiller._run
        prefiller._run = lambda *a: calls.append(a[-1].numel()) or run(*a)
        got = [r.result()[0].token_ids for r in [eng.submit(p, params, run_tools=False) for p in ps]]
    assert got == want
    assert calls and max(calls) > 1  # prompts went through the graph packed together
