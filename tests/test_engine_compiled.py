"""The compiled decode step: the same logits as the eager step, the same tokens as alone."""

from __future__ import annotations

import pytest
import torch
from conftest import caches_with_prompts, peaky_engine_model

from chatsmith.engine.decode import CompiledDecode
from chatsmith.engine.engine import Engine
from chatsmith.engine.runner import eager_decode
from chatsmith.engine.sampling import SamplingParams
from chatsmith.model.attention import AttnMeta
from chatsmith.model.kv_cache import SlotKVCache


@pytest.fixture(scope="module")
def model(tiny_tok):
    return peaky_engine_model(tiny_tok.vocab_size, seed=5)


def eager_step(model, cache: SlotKVCache, ids: torch.Tensor) -> torch.Tensor:
    return eager_decode(model, cache, ids.tolist())


@torch.inference_mode()
def test_a_read_only_step_attends_like_the_eager_one_and_stores_the_same_keys(model) -> None:
    """The cached attention as a compiled graph runs it: reading the cache, handing the new
    keys back for the caller to store."""
    lengths = [5, 17, 2, 30]
    ref, mine = caches_with_prompts(model, lengths)
    ids = torch.tensor([3, 9, 27, 81])
    for _ in range(3):  # three steps: the stored keys of one step feed the next
        want = eager_step(model, ref, ids)
        before = mine.k.clone()
        meta = AttnMeta.rows(mine.k, mine.v, mine.lengths[:4])  # stage False: only reads
        got = model.lm_head(model.hidden_states(ids[:, None], meta)[:, 0]).float()
        assert torch.equal(mine.k, before)
        mine.append(torch.stack(meta.new_k), torch.stack(meta.new_v), meta.past)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        ids = want.argmax(-1)
    assert mine.lengths == ref.lengths
    assert torch.allclose(mine.k, ref.k, atol=1e-5) and torch.allclose(mine.v, ref.v, atol=1e-5)


@torch.inference_mode()
def test_compiled_step_matches_the_eager_step(model) -> None:
    lengths = [1, 12, 40]  # a one-token slot too: the step reads at least two positions
    ref, mine = caches_with_prompts(model, lengths)
    dec = CompiledDecode(model, mine, freeze=False)
    for n in (1, 3):  # the single-sequence graph and the batched one
        ids = torch.arange(2, 2 + n)
        want = eager_step(model, ref, ids)
        got = dec(ids)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert mine.lengths == ref.lengths


def test_compiled_engine_gives_each_prompt_the_tokens_of_the_eager_engine(model, tiny_tok) -> None:
    g = torch.Generator().manual_seed(1)
    ps = [torch.randint(10, tiny_tok.vocab_size, (n,), generator=g).tolist() for n in (4, 9, 23, 15)]
    params = SamplingParams(max_new_tokens=24, ignore_eos=True)
    with Engine(model, tiny_tok, max_batch=4) as eng:
        eager = [r[0].token_ids for r in eng.generate(ps, params)]
    with Engine(model, tiny_tok, max_batch=4, compile=True) as eng:
        together = [r[0].token_ids for r in eng.generate(ps, params)]
        alone = [eng.submit(p, params).result()[0].token_ids for p in ps]
    assert together == alone == eager


@pytest.mark.parametrize("freeze", [True, False])
@torch.inference_mode()
def test_a_frozen_step_holds_the_weights_it_was_compiled_with(tiny_tok, freeze: bool, monkeypatch) -> None:
    """Compiled in process, freeze folds the weights into the graph as constants and inductor
    prepacks the matrices (copies in MKL's or oneDNN's layout, the fast CPU matmuls); without
    it the step reads the live weights, as RL rollouts need."""
    monkeypatch.setenv("CHATSMITH_AOT", "0")  # the ahead-of-time step: the test below
    model = peaky_engine_model(tiny_tok.vocab_size, seed=7)
    cache, _ = caches_with_prompts(model, [6])
    dec = CompiledDecode(model, cache, freeze=freeze)
    ids = torch.tensor([11])
    before = dec(ids)
    model.lm_head.weight.zero_()  # unfrozen, every logit becomes 0
    cache.lengths[0] -= 1  # the same position again
    after = dec(ids)
    assert torch.equal(before, after) == freeze
    assert before.abs().max() > 0


@torch.inference_mode()
def test_the_ahead_of_time_step_reads_the_models_own_tensors(tiny_tok) -> None:
    """A package holds no weights: its constants are the model's tensors, not copies (one set
    of weights in memory, shared by the decode and prefill steps)."""
    model = peaky_engine_model(tiny_tok.vocab_size, seed=7)
    cache, _ = caches_with_prompts(model, [6])
    dec = CompiledDecode(model, cache, freeze=True)
    if not dec.ahead:
        pytest.skip("no ahead-of-time step here (no C++ attention, or CHATSMITH_AOT=0)")
    before = dec(torch.tensor([11]))
    assert dec._aot is not None and before.abs().max() > 0
    model.norm.weight.zero_()  # the last norm's scale: every hidden state, so every logit, is 0
    cache.lengths[0] -= 1
    assert dec(torch.tensor([11])).abs().max() == 0


@torch.inference_mode()
def test_each_decoder_compiles_its_own_graphs(tiny_tok, monkeypatch) -> None:
    """Frozen graphs differ per model. Compiled from one shared code object, they piled up
    there until dynamo refused to compile more (8 by default: the fifth model decoded in a
    process, e.g. a server reloading). The limit is lowered to 2 here so that two decoders
    show it: each has exactly its own two graphs (one sequence, and more)."""
    monkeypatch.setenv("CHATSMITH_AOT", "0")  # compiled in process, as where AOT is not used
    with torch._dynamo.config.patch(recompile_limit=2):
        for seed in range(2):
            model = peaky_engine_model(tiny_tok.vocab_size, seed=20 + seed)
            cache, _ = caches_with_prompts(model, [4, 7])
            dec = CompiledDecode(model, cache, freeze=True)
            assert dec(torch.tensor([1, 2])).shape == (2, model.cfg.vocab_size)
