"""The KV-cache manager alone, on a cache that only records its copies: slot compaction and
the prefix store (the scheduler's use of it is tested in test_engine_batching.py)."""

from __future__ import annotations

from typing import Any

from chatsmith.engine.kv_manager import MIN_PREFIX, KVManager
from chatsmith.engine.sampling import SamplingParams
from chatsmith.engine.sequence import Request, Seq


class FakeCache:
    def __init__(self) -> None:
        self.copies: list[tuple[Any, ...]] = []
        self.freed: list[int] = []

    def copy_slot(self, *a: Any) -> None:
        self.copies.append(a)

    def free(self, slot: int) -> None:
        self.freed.append(slot)


def seq(prompt: list[int]) -> Seq:
    return Seq(req=Request(prompt, SamplingParams(), run_tools=False), index=0, sampler=None, text=None)  # type: ignore[arg-type]


def test_survivors_past_the_end_fill_the_holes_and_the_prefill_stays_last() -> None:
    cache = FakeCache()
    kv = KVManager(cache, n_slots=6, prefix_slots=0)  # type: ignore[arg-type]
    seqs = [seq([i]) for i in range(5)]
    for s in seqs:
        kv.place(s)
    kv.prefilling = seqs[4]
    assert [s.slot for s in seqs] == [0, 1, 2, 3, 4] and kv.decoding() == 4 and kv.free_slots() == 1
    kv.remove([seqs[0], seqs[2]])
    # Slot 3 moves into hole 0, the prefill from 4 to 2; nothing else is copied.
    assert cache.copies == [(3, 0), (4, 2)]
    assert kv.live == [seqs[3], seqs[1], seqs[4]] and [s.slot for s in kv.live] == [0, 1, 2]
    assert kv.prefilling is seqs[4] and 3 in cache.freed and 4 in cache.freed


def test_prefix_store_reuses_the_longest_prefix_and_keeps_the_last_of_a_burst() -> None:
    cache = FakeCache()
    kv = KVManager(cache, n_slots=4, prefix_slots=2)  # type: ignore[arg-type]
    shared = list(range(100, 100 + 2 * MIN_PREFIX))
    burst = [seq([*shared, i]) for i in range(3)]
    for s in burst:
        kv.place(s)
    kv.remember_burst(burst)  # only the last two fit in the store: the first is never copied
    assert sorted(map(tuple, kv.prefixes.values())) == sorted(tuple(s.req.prompt) for s in burst[1:])
    assert [c[0] for c in cache.copies] == [burst[1].slot, burst[2].slot]
    again = seq([*shared, 2])  # the same prompt: all but its last two tokens come from the store
    kv.place(again)
    kv.reuse_prefix(again)
    assert again.fed == len(shared) - 1 and again.todo == [shared[-1], 2]
    assert kv.prefix_hits == 1 and kv.prefix_tokens_reused == len(shared) - 1
    short = seq([*shared[: MIN_PREFIX - 1], 0])  # a shared start under MIN_PREFIX is recomputed
    kv.place(short)
    kv.reuse_prefix(short)
    assert short.fed == 0 and kv.prefix_hits == 1
