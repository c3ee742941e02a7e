"""The KV-cache manager: which sequence sits in which cache slot, and a store of prefixes.

Slot layout (`SlotKVCache`): running sequences sit in slots 0..n-1, the one being
prefilled after them; sequences that finish in the same step leave together, and only the
survivors past the new end move into their slots, so a decode step always attends to a
contiguous view. A few extra slots hold the keys and values of recent prompts: a new
prompt that starts with one of them (the same system prompt, the earlier turns of a chat)
copies that prefix instead of computing it; of a burst packed in one prefill, only the
prompts the store will keep are copied in.
"""

from __future__ import annotations

from chatsmith.engine.sequence import Seq
from chatsmith.model.kv_cache import SlotKVCache

MIN_PREFIX = 16  # shorter shared prefixes are cheaper to recompute than to look up


def worth_remembering(prompt: list[int]) -> bool:
    """Whether a prompt is long enough to keep in the prefix store."""
    return len(prompt) >= 2 * MIN_PREFIX


class KVManager:
    """Owns the cache's slots: n_slots for running sequences, prefix_slots for the store."""

    def __init__(self, cache: SlotKVCache, n_slots: int, prefix_slots: int) -> None:
        self.cache, self.n_slots = cache, n_slots
        self.live: list[Seq] = []  # live[i] sits in cache slot i
        self.prefilling: Seq | None = None  # always the last of `live` while it runs
        # Prefix store: slot -> the prompt tokens whose keys/values it holds (LRU order).
        self.prefixes: dict[int, list[int]] = {n_slots + i: [] for i in range(prefix_slots)}
        self.prefix_hits = 0
        self.prefix_tokens_reused = 0

    # -- slots ---------------------------------------------------------------------------
    def free_slots(self) -> int:
        return self.n_slots - len(self.live)

    def decoding(self) -> int:
        """How many sequences the next decode step runs: slots 0..n-1, all of `live` but the
        one being prefilled (always last)."""
        return len(self.live) - (self.prefilling is not None)

    def place(self, seq: Seq) -> None:
        """Put seq in the next free slot."""
        seq.slot = len(self.live)
        self.live.append(seq)

    def fork(self, seq: Seq, sib: Seq) -> None:
        """Put sib in the next free slot with a copy of seq's cache (n > 1 choices)."""
        self.place(sib)
        self.cache.copy_slot(seq.slot, sib.slot)

    def _move(self, seq: Seq, slot: int) -> None:
        self.cache.copy_slot(seq.slot, slot)
        self.cache.free(seq.slot)
        seq.slot = slot

    def remove(self, seqs: list[Seq]) -> None:
        """Take seqs out of the batch, keeping slots contiguous with the prefill last.

        Only survivors beyond the new end move, each into a hole: when many sequences end
        in one step (a burst of equal requests), few or none of their caches are copied."""
        gone = {id(s) for s in seqs}
        if self.prefilling is not None and id(self.prefilling) in gone:
            self.prefilling = None
        tail = self.prefilling
        stay = [s for s in self.live if id(s) not in gone and s is not tail]
        n = len(stay)
        holes = iter(sorted({*range(n)} - {s.slot for s in stay}))
        for s in stay:
            if s.slot >= n:
                self._move(s, next(holes))
        if tail is not None and tail.slot != n:
            self._move(tail, n)
        used = n + (tail is not None)
        for slot in range(used, len(self.live)):
            self.cache.free(slot)
        self.live = sorted(stay, key=lambda s: s.slot) + ([tail] if tail is not None else [])

    # -- prefix reuse --------------------------------------------------------------------
    def demand(self) -> int:
        """Tokens the cache holds or will hold once the tokens waiting to be fed are in: the
        running sequences' and the prefix store's."""
        return self.cache.held() + sum(len(s.todo) for s in self.live)

    def evict_prefix(self) -> bool:
        """Drop the least recently used stored prefix that holds tokens; whether one was."""
        for slot, toks in self.prefixes.items():
            if toks:
                self.cache.free(slot)
                self.prefixes.pop(slot)
                self.prefixes = {slot: [], **self.prefixes}  # first in line for reuse
                return True
        return False

    def reuse_prefix(self, seq: Seq) -> None:
        """Copy the longest stored prefix of the tokens seq has to feed (its prompt, or a
        resumed sequence's whole context) into its slot, if long enough."""
        prompt = seq.todo if seq.resumed else seq.req.prompt
        best, best_slot = 0, -1
        for slot, toks in self.prefixes.items():
            n = 0
            for a, b in zip(toks, prompt):
                if a != b:
                    break
                n += 1
            if n > best:
                best, best_slot = n, slot
        # The last prompt token must run to give logits; two run, so that the rest of the
        # prompt goes through the same (compiled) prefill as a whole prompt does, never the
        # eager path of a single token (runner.prefill_packed).
        best = min(best, len(prompt) - 2)
        if best >= MIN_PREFIX:
            self.cache.copy_slot(best_slot, seq.slot, best)
            seq.fed, seq.todo = best, list(prompt[best:])
            self.prefixes[best_slot] = self.prefixes.pop(best_slot)  # most recently used
            self.prefix_hits += 1
            self.prefix_tokens_reused += best

    def remember_prefix(self, seq: Seq) -> None:
        """Keep seq's prompt (now whole in its slot) in the store, in place of the LRU one."""
        prompt = seq.req.prompt
        if not worth_remembering(prompt) or not self.prefixes:
            return
        for toks in self.prefixes.values():
            if toks[: len(prompt)] == prompt:
                return  # already held
        victim = next(iter(self.prefixes))  # least recently used
        self.cache.copy_slot(seq.slot, victim, len(prompt))
        self.prefixes.pop(victim)
        self.prefixes[victim] = list(prompt)

    def remember_burst(self, group: list[Seq]) -> None:
        """Remember the prompts of a packed prefill. Only the last few of a burst would stay
        in the store: remember just those instead of copying each one in only to push it
        out again."""
        kept: list[Seq] = []
        for s in reversed(group):
            if len(kept) == len(self.prefixes):
                break
            if worth_remembering(s.req.prompt) and all(k.req.prompt != s.req.prompt for k in kept):
                kept.append(s)
        for s in reversed(kept):
            self.remember_prefix(s)
