"""The KV memory the user controls: budgets, context lengths, pages taken as tokens arrive,
admission against the budget and preemption when running sequences outgrow it."""

from __future__ import annotations

import pytest
import torch
from conftest import peaky_engine_model

from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.engine import Engine
from chatsmith.engine.memory import parse_size, plan_kv
from chatsmith.engine.sampling import SamplingParams
from chatsmith.engine.scheduler import Scheduler
from chatsmith.engine.sequence import Request
from chatsmith.model.kv_cache import SlotKVCache


@pytest.fixture(scope="module")
def model(tiny_tok):
    return peaky_engine_model(tiny_tok.vocab_size, seed=5)


def test_sizes_read_as_tokens_or_bytes() -> None:
    assert parse_size("64k") == ("tokens", 64_000)
    assert parse_size("8192") == ("tokens", 8192)
    assert parse_size("1.5GB") == ("bytes", 3 << 29)
    assert parse_size("512 MB") == ("bytes", 512 << 20)
    for bad in ("", "lots", "3 parsecs"):
        with pytest.raises(ChatsmithError):
            parse_size(bad)


def test_plan_turns_bytes_into_tokens_and_checks_the_context(model) -> None:
    per = 2 * 2 * 2 * 16 * 4  # k and v, 2 layers, 2 kv heads of 16, float32
    plan = plan_kv(model, torch.float32, f"{per * 1000}B")
    assert (plan.budget_tokens, plan.context, plan.token_bytes) == (1000, 96, per)
    assert plan_kv(model, torch.float32, 50).context == 50  # a budget below the model's context
    assert plan_kv(model, torch.float32, 1000, max_context=40).context == 40
    with pytest.raises(ChatsmithError, match="max-context"):
        plan_kv(model, torch.float32, 1000, max_context=97)
    with pytest.raises(ChatsmithError, match="holds no context"):
        plan_kv(model, torch.float32, 50, max_context=80)
    default = plan_kv(model, torch.float32)  # from the memory available: far more than needed here
    assert default.context == 96 and default.budget_tokens >= 96


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux page accounting")
def test_cache_memory_follows_the_tokens_held() -> None:
    # 8 slots x 4096 positions x 2 layers x 4 heads x 64 floats: 64 MiB each of k and v, virtual.
    k = torch.ones(2, 4096, 4, 64)
    before = _rss()
    cache = SlotKVCache(8, 2, 4, 64, 4096)
    assert _rss() - before < 8 << 20  # nothing touched yet
    cache.store_prompts(k, k, [(3, 4096)])  # one slot full: 2 x 8 MiB
    grown = _rss() - before
    assert 14 << 20 < grown < 24 << 20
    assert cache.k[1, 3, 4095, 0, 0] == 1 and cache.k[1, 2, 0, 0, 0] == 0
    cache.free(3)
    assert _rss() - before < grown - (12 << 20)  # its pages went back
    assert cache.k[1, 3, 10, 0, 0] == 0  # and read as zeros again


def _greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, ignore_eos=True)


def test_sequences_outgrowing_the_budget_are_preempted_and_resume_exactly(model, tiny_tok) -> None:
    g = torch.Generator().manual_seed(9)
    ps = [torch.randint(10, tiny_tok.vocab_size, (12,), generator=g).tolist() for _ in range(4)]
    with Engine(model, tiny_tok, max_batch=4, prefix_slots=0) as eng:
        alone = [eng.submit(p, _greedy(40)).result()[0].token_ids for p in ps]
    # 4 x (12 + 40) tokens do not fit in 96: all four start, and the newest give way.
    with Engine(model, tiny_tok, max_batch=4, kv_budget=96, prefix_slots=0) as eng:
        together = [r[0].token_ids for r in eng.generate(ps, _greedy(40))]
        stats = eng.stats()
    assert together == alone
    assert stats["preemptions"] > 0 and stats["kv_used"] == 0 and stats["kv_total"] == 96


def test_admission_waits_for_room_in_the_budget(model, tiny_tok) -> None:
    sched = Scheduler(model, tiny_tok, n_slots=8, max_len=96, prefix_slots=0, budget=60)
    reqs = [Request([11 + i] * 25, _greedy(5), False) for i in range(3)]  # 26 tokens each: two fit
    for r in reqs:
        sched.add(r)
    most = 0
    while sched.busy:
        sched.step()
        assert sched.kv.demand() <= 60
        most = max(most, len(sched.live))
    assert most == 2 and sched.preemptions == 0
    assert all(r.finished and len(r.completions[0].token_ids) == 5 for r in reqs)
    eng = Engine(model, tiny_tok, max_batch=8, kv_budget=60)
    with eng, pytest.raises(ChatsmithError, match="KV budget"):
        eng.submit([11] * 25, SamplingParams(n=3, max_new_tokens=2))
