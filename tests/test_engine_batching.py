"""The engine's continuous batching: batched equals alone, sampling features, admission."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import peaky_engine_model

from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.engine import Engine, EngineFull, PromptTooLong
from chatsmith.engine.generate import generate_uncached
from chatsmith.engine.runner import eager_prefill
from chatsmith.engine.sampling import SamplingParams
from chatsmith.model.kv_cache import SlotKVCache


@pytest.fixture(scope="module")
def model(tiny_tok):
    return peaky_engine_model(tiny_tok.vocab_size, seed=3)


def prompts(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(10, vocab, (int(torch.randint(3, 30, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


def greedy(n: int = 20) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, ignore_eos=True)


def test_batched_greedy_equals_each_alone_and_the_uncached_reference(model, tiny_tok) -> None:
    ps = prompts(8, tiny_tok.vocab_size)
    with Engine(model, tiny_tok, max_batch=8) as eng:
        together = [r[0].token_ids for r in eng.generate(ps, greedy())]
        alone = [eng.submit(p, greedy()).result()[0].token_ids for p in ps]
    assert together == alone
    assert together[0] == generate_uncached(model, ps[0], 20)
    assert len({tuple(t) for t in together}) == 8


@torch.inference_mode()
def test_packed_prefill_gives_each_slot_its_own_keys_and_logits(model) -> None:
    # Several prompts in one packed row (slot 1 already holding a prefix) against one at a time.
    c = model.cfg
    packed, single = (SlotKVCache(4, c.n_layer, c.n_kv_head, c.head_dim, c.seq_len) for _ in range(2))
    head = torch.randint(10, c.vocab_size, (7,)).tolist()
    for cache in (packed, single):
        eager_prefill(model, cache, [(1, head)])
    parts = [(0, torch.randint(10, c.vocab_size, (5,))), (1, torch.randint(10, c.vocab_size, (9,)))]
    parts.append((2, torch.randint(10, c.vocab_size, (3,))))
    parts.append((3, torch.randint(10, c.vocab_size, (5,))))  # two new prompts of one length
    last = eager_prefill(model, packed, [(slot, ids.tolist()) for slot, ids in parts])
    for (slot, ids), got in zip(parts, last):
        alone = eager_prefill(model, single, [(slot, ids.tolist())])[0]
        assert torch.allclose(got, alone, atol=1e-5)
    assert packed.lengths == single.lengths == [5, 16, 3, 5]
    assert torch.allclose(packed.k, single.k, atol=1e-5) and torch.allclose(packed.v, single.v, atol=1e-5)


def test_requests_joining_at_different_steps_get_the_same_tokens(model, tiny_tok) -> None:
    ps = prompts(8, tiny_tok.vocab_size, seed=1)
    with Engine(model, tiny_tok, max_batch=8, prefill_chunk=8) as eng:
        alone = [eng.submit(p, greedy(24)).result()[0].token_ids for p in ps]
        reqs = []
        for p in ps:  # each joins after the ones before it produced a few tokens
            reqs.append(eng.submit(p, greedy(24)))
            ev = reqs[-1].events()
            while next(ev).kind != "token":
                pass
        staggered = [r.result()[0].token_ids for r in reqs]
    assert staggered == alone


def test_same_seed_same_sample_and_n_shares_one_prefill(model, tiny_tok) -> None:
    p = prompts(1, tiny_tok.vocab_size, seed=2)[0]
    hot = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, ignore_eos=True, seed=7)
    with Engine(model, tiny_tok) as eng:
        a = eng.submit(p, hot).result()[0].token_ids
        b = eng.submit(p, hot).result()[0].token_ids
        other = SamplingParams(**{**hot.__dict__, "seed": 8})
        c = eng.submit(p, other).result()[0].token_ids
        assert a == b and a != c
        before = eng.sched.prefill_tokens
        four = eng.submit(p, SamplingParams(**{**hot.__dict__, "n": 4, "seed": None})).result()
        assert eng.sched.prefill_tokens - before <= len(p)  # one prefill (less with a cached prefix)
    assert [c.index for c in four] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in four}) > 1


def test_stop_string_across_tokens_is_cut(model, tiny_tok) -> None:
    p = prompts(1, tiny_tok.vocab_size, seed=4)[0]
    with Engine(model, tiny_tok) as eng:
        full = eng.submit(p, greedy(30)).result()[0]
        pieces = [tiny_tok.decode([t]) for t in full.token_ids]
        # A stop string made of the end of one token's text and the start of the next's.
        i = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) >= 2 and pieces[i + 1])
        stop = pieces[i][-2:] + pieces[i + 1][:1]
        start = full.text.find(stop)
        params = greedy(30)
        params.stop = [stop]
        cut = eng.submit(p, params).result()[0]
        streamed = "".join(e.text for e in eng.submit(p, params).events())
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:start] == streamed
    assert stop not in cut.text


def test_cancel_frees_the_cache(model, tiny_tok) -> None:
    p = prompts(1, tiny_tok.vocab_size, seed=5)[0]
    with Engine(model, tiny_tok, prefix_slots=0) as eng:
        req = eng.submit(p, greedy(60))
        ev = req.events()
        while next(ev).kind != "token":
            pass
        req.cancel()
        done = [e for e in ev if e.kind == "done"]
        assert done[0].data["finish_reason"] == "cancelled"
        assert eng.stats()["running"] == 0
        assert sum(eng.sched.cache.lengths) == 0


def test_tiny_budget_loses_no_request(model, tiny_tok) -> None:
    ps = prompts(12, tiny_tok.vocab_size, seed=6)
    results: list[str] = []
    lock = threading.Lock()
    with Engine(model, tiny_tok, kv_tokens=2 * 96, max_waiting=3) as eng:
        assert eng.stats()["slots"] == 2

        def client(p: list[int]) -> None:
            try:
                out = eng.submit(p, greedy(8)).result(timeout=60)
                res = "done" if len(out) == 1 and len(out[0].token_ids) == 8 else "bad"
            except EngineFull as e:
                res = "refused" if "waiting" in str(e) else "bad"
            with lock:
                results.append(res)

        threads = [threading.Thread(target=client, args=(p,)) for p in ps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(ChatsmithError, match="cache slots"):
            eng.submit(ps[0], SamplingParams(n=3))
        with pytest.raises(PromptTooLong) as e:
            eng.submit([11] * 96, greedy())
        assert e.value.prompt_tokens == 96 and e.value.limit == 96
    assert len(results) == 12 and "bad" not in results and "done" in results


def test_logprobs_match_a_full_forward(model, tiny_tok) -> None:
    p = prompts(1, tiny_tok.vocab_size, seed=7)[0]
    with Engine(model, tiny_tok) as eng:
        out = eng.submit(
            p, SamplingParams(max_new_tokens=5, ignore_eos=True, logprobs=True, top_logprobs=3)
        ).result()[0]
        scored = eng.submit(p, SamplingParams(max_new_tokens=0, prompt_logprobs=True)).result()[0]
    ids = p + out.token_ids
    with torch.no_grad():
        lp = model(torch.tensor([ids])).log_softmax(-1)[0]
    want = [float(lp[len(p) - 1 + i, t]) for i, t in enumerate(out.token_ids)]
    assert out.logprobs == pytest.approx(want, abs=1e-4)
    assert out.top_logprobs[0][0][0] == out.token_ids[0]  # greedy picks the most likely
    assert scored.prompt_logprobs[0] is None and len(scored.prompt_logprobs) == len(p)
    ref = [float(lp[i, p[i + 1]]) for i in range(len(p) - 1)]
    assert scored.prompt_logprobs[1:] == pytest.approx(ref, abs=1e-4)


def test_min_tokens_and_logit_bias(model, tiny_tok) -> None:
    p = prompts(1, tiny_tok.vocab_size, seed=8)[0]
    end = tiny_tok.im_end_id
    with Engine(model, tiny_tok) as eng:
        forced = SamplingParams(max_new_tokens=20, logit_bias={end: 100.0})
        assert eng.submit(p, forced).result()[0].token_ids == [end]
        forced.min_tokens = 5
        out = eng.submit(p, forced).result()[0]
    assert len(out.token_ids) == 6 and out.token_ids[-1] == end and end not in out.token_ids[:5]
    assert out.finish_reason == "stop"


def test_shared_prefix_is_reused_and_changes_nothing(model, tiny_tok) -> None:
    system = list(range(40, 80))  # a long shared start (a system prompt)
    a, b = [*system, 20, 21, 22], [*system, 30, 31]
    with Engine(model, tiny_tok, prefix_slots=0) as eng:
        want = eng.submit(b, greedy()).result()[0].token_ids
    with Engine(model, tiny_tok) as eng:
        eng.submit(a, greedy()).result()
        got = eng.submit(b, greedy()).result()[0].token_ids
        assert eng.stats()["prefix_hits"] == 1
        assert eng.stats()["prefix_tokens_reused"] == len(system)
    assert got == want


def test_bad_parameters_are_refused_by_name(model, tiny_tok) -> None:
    with Engine(model, tiny_tok) as eng:
        for bad, field in (
            (SamplingParams(temperature=-1), "temperature"),
            (SamplingParams(top_p=0), "top_p"),
            (SamplingParams(max_new_tokens=0), "max_new_tokens"),
            (SamplingParams(logit_bias={10**6: 1.0}), "logit_bias"),
        ):
            with pytest.raises(ChatsmithError, match=field):
                eng.submit([11, 12], bad)


def test_streamed_text_equals_decoding_the_whole_completion(tiny_tok) -> None:
    from chatsmith.engine.text import TurnText, special_ids

    text = "Hello, 世界! 人工智能 — naïve café 1517 <|im_end|>done"
    ids = tiny_tok.encode(text)
    g = torch.Generator().manual_seed(0)
    ids += torch.randint(7, tiny_tok.vocab_size, (200,), generator=g).tolist()  # split UTF-8 too
    ids += tiny_tok.encode(" end")  # a completion cut mid-character: tests/test_engine_text_utf8.py
    tt = TurnText(tiny_tok, [], special_ids(tiny_tok))
    streamed = "".join(tt.push(t).text for t in ids) + tt.flush()
    assert streamed == tt.text == tiny_tok.decode(ids, skip_special=True)


def test_an_idle_step_prefills_more_than_a_chunk_and_a_busy_one_does_not(model, tiny_tok) -> None:
    """With nothing decoding no stream waits on a prefill, so a step takes up to idle_chunk
    prompt tokens; while sequences decode it keeps to one chunk."""
    from chatsmith.engine.scheduler import Scheduler
    from chatsmith.engine.sequence import Request

    sched = Scheduler(model, tiny_tok, n_slots=8, max_len=64, prefill_chunk=8, prefix_slots=0)
    assert sched.idle_chunk == 64
    ps = [p[:6] for p in prompts(8, tiny_tok.vocab_size, seed=5) if len(p) >= 6][:6]
    reqs = [Request(p, greedy(10), run_tools=False) for p in ps]
    with torch.inference_mode():
        for r in reqs[:4]:
            sched.add(r)
        sched.step()  # idle: all four (24 tokens) in one step, and each decodes once
        assert len(sched.live) == 4 and not sched.waiting
        assert sched.prefill_tokens == 24
        made = [s.generated for s in sched.live]
        for r in reqs[4:]:
            sched.add(r)
        sched.step()  # four decode: 8 prompt tokens, one whole prompt and a start on the next
        assert sched.prefill_tokens == 24 + 8
        assert sched.prefilling is not None and sched.prefilling.req is reqs[5] and not sched.waiting
        assert [s.generated for s in sched.live[:4]] == [m + 1 for m in made]  # kept decoding


def counted_copies(sched, monkeypatch) -> list[tuple[int, ...]]:
    """The (src, dst, ...) of every copy between the scheduler's cache slots, as they happen."""
    copies: list[tuple[int, ...]] = []
    real = sched.cache.copy_slot
    monkeypatch.setattr(sched.cache, "copy_slot", lambda *a: copies.append(a) or real(*a))
    return copies


def test_sequences_ending_in_one_step_leave_together(model, tiny_tok, monkeypatch) -> None:
    """Several sequences finishing in the same step leave at once: survivors beyond the new
    end move into the holes (and keep their tokens); when all end, no cache is copied."""
    from chatsmith.engine.scheduler import Scheduler
    from chatsmith.engine.sequence import Request

    ps = prompts(8, tiny_tok.vocab_size, seed=7)
    mixed = [5, 12, 5, 20, 5, 12, 20, 5]  # four end at the fifth token, in slots 0, 2, 4, 7
    for ends in (mixed, [9] * 8):
        with Engine(model, tiny_tok, max_batch=8) as eng:
            alone = [eng.submit(p, greedy(m)).result()[0].token_ids for p, m in zip(ps, ends)]
        sched = Scheduler(model, tiny_tok, n_slots=8, max_len=64, prefix_slots=0)
        copies = counted_copies(sched, monkeypatch)
        reqs = [Request(p, greedy(m), run_tools=False) for p, m in zip(ps, ends)]
        sizes = []
        with torch.inference_mode():
            for r in reqs:
                sched.add(r)
            sched.step()  # idle: all eight prompts in one packed forward
            while sched.busy:
                sizes.append(len(sched.live))
                sched.step()
                assert [s.slot for s in sched.live] == list(range(len(sched.live)))
                if sizes[-1] == 8 and len(sched.live) == 4:  # slots 5 and 6 into 0 and 2
                    assert sorted(copies) == [(5, 0), (6, 2)]
        assert sizes[0] == 8 and (4 in sizes) == (ends == mixed)
        assert sched.cache.lengths[:8] == [0] * 8
        assert [r.result()[0].token_ids for r in reqs] == alone
        if ends != mixed:
            assert copies == []


def test_a_burst_remembers_only_the_prompts_the_prefix_store_keeps(model, tiny_tok, monkeypatch) -> None:
    """Of a burst packed in one prefill, the prefix store keeps the last prompts: only those
    are copied in, and a later prompt sharing one of them reuses it."""
    from chatsmith.engine.scheduler import Scheduler
    from chatsmith.engine.sequence import Request

    g = torch.Generator().manual_seed(11)
    ps = [torch.randint(10, tiny_tok.vocab_size, (40,), generator=g).tolist() for _ in range(6)]
    sched = Scheduler(model, tiny_tok, n_slots=8, max_len=64, prefix_slots=2)
    copies = counted_copies(sched, monkeypatch)
    with torch.inference_mode():
        for p in ps:
            sched.add(Request(p, greedy(3), run_tools=False))
        sched.step()  # all six in one packed forward
        assert sorted(dst for _, dst, *_ in copies) == [8, 9]
        assert sorted(map(tuple, sched.kv.prefixes.values())) == sorted(map(tuple, ps[-2:]))
        while sched.busy:
            sched.step()
        again = Request([*ps[-1][:36], 5, 6], greedy(3), run_tools=False)
        sched.add(again)
        while sched.busy:
            sched.step()
    assert sched.kv.prefix_hits == 1 and again.result()[0].finish_reason == "length"
