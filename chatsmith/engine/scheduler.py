"""Continuous batching: the scheduler decides what runs in each step.

Each `step()` does, in order: drop cancelled requests, admit waiting ones while cache
slots are free, run one chunk of prompt (prefill) for the sequence being admitted, then
one decode step for all running sequences together. Requests therefore join and leave
between decode steps, and a long prompt is fed in chunks so running streams keep going.
A step with nothing to decode takes up to IDLE_CHUNKS chunks of prompt: no stream waits on
it, and a burst of requests then starts decoding together instead of joining four by four
(32 requests of 64 tokens at once on the demo model: 5-10 % more tokens per second in all).

Memory: slots are virtual and the cache holds at most `budget` tokens (engine/memory.py).
A request is admitted when its prompt fits beside what is held (stored prefixes are dropped
first); when running sequences outgrow the budget, the newest is preempted and later
computed again from its tokens (vLLM's recompute preemption), ahead of new requests.

Slots and prefix reuse are the KV-cache manager's (kv_manager.py), what a sampled token
leads to is the output processor's (outputs.py), and tool turns are tool_turns.py's.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import torch

from chatsmith.engine.kv_manager import KVManager
from chatsmith.engine.outputs import OutputProcessor
from chatsmith.engine.runner import ModelRunner
from chatsmith.engine.sampling import sample_batch
from chatsmith.engine.sequence import Request, Seq
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer

IDLE_CHUNKS = 8  # prefill chunks per step while no sequence decodes


class Scheduler:
    """Decides what runs: admission, which prompts prefill and which sequences decode."""

    def __init__(
        self,
        model: GPT,
        tok: BPETokenizer,
        n_slots: int,
        max_len: int,
        prefill_chunk: int = 256,
        prefix_slots: int = 4,
        autocast: Any = None,
        compile: bool = False,
        freeze: bool = True,
        budget: int | None = None,
    ) -> None:
        """compile: run decode steps as a compiled graph (engine/decode.py); freeze: with
        the weights as constants of that graph, for a model that will not change; budget: the
        most tokens the cache holds (default: every slot full)."""
        self.model, self.tok = model, tok
        w = model.embed_tokens.weight
        self.device, self.vocab = w.device, model.cfg.vocab_size
        self.n_slots, self.max_len, self.chunk = n_slots, max_len, prefill_chunk
        self.idle_chunk = IDLE_CHUNKS * prefill_chunk  # the prefill budget of a step with no decoding
        # The model's forward passes and the KV cache (autocast: a context manager for them, or None).
        self.runner = ModelRunner(model, n_slots + prefix_slots, max_len, autocast, compile, freeze)
        self.cache = self.runner.cache
        self.kv = KVManager(self.cache, n_slots, prefix_slots)
        self.out = OutputProcessor(tok, self.kv, max_len, self.vocab, self.device)
        self.waiting: deque[Request] = deque()
        self.resumed: deque[Seq] = deque()  # preempted sequences, oldest first
        self.budget = budget or (n_slots + prefix_slots) * max_len
        self.preemptions = 0
        self._order = itertools.count()
        self.prefill_tokens = 0  # prompt tokens computed (not copied from a cached prefix)

    def warm_up(self) -> None:
        """Compile the decode step now, if asked to (runner.warm_up)."""
        self.runner.warm_up()

    # -- bookkeeping ----------------------------------------------------------------------
    @property
    def live(self) -> list[Seq]:
        return self.kv.live  # the running sequences, live[i] in cache slot i

    @property
    def prefilling(self) -> Seq | None:
        """The sequence whose prompt is being fed, chunk by chunk (always the last of `live`)."""
        return self.kv.prefilling

    @prefilling.setter
    def prefilling(self, seq: Seq | None) -> None:
        self.kv.prefilling = seq

    @property
    def busy(self) -> bool:
        return bool(self.live or self.waiting or self.resumed)

    def holds(self, req: Request) -> bool:
        """Whether req is still waiting or running here."""
        seqs = (*self.live, *self.resumed)
        return any(r is req for r in self.waiting) or any(s.req is req for s in seqs)

    # -- the KV budget -------------------------------------------------------------------
    def _fits(self, tokens: int) -> bool:
        """Whether `tokens` more fit in the budget, dropping stored prefixes to make room."""
        while self.kv.demand() + tokens > self.budget:
            if not self.kv.evict_prefix():
                return False
        return True

    def _preempt_over_budget(self) -> None:
        """While the running sequences need more than the budget, take the newest one out;
        it comes back, ahead of new requests, by computing its context again."""
        while not self._fits(0) and self.kv.decoding() > 1:
            victim = max(self.live[: self.kv.decoding()], key=lambda s: s.order)
            self.kv.remove([victim])
            victim.extra += victim.todo  # the sampled token not yet fed
            victim.todo = list(victim.req.prompt) + victim.extra
            victim.slot, victim.fed, victim.resumed = -1, 0, True
            self.resumed.appendleft(victim)
            self.preemptions += 1

    # -- admission -----------------------------------------------------------------------
    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def _admit(self) -> None:
        if self.prefilling is not None:
            return
        if self.resumed:  # preempted sequences first, each as soon as its context fits
            seq = self.resumed[0]
            if self.kv.free_slots() > 0 and self._fits(len(seq.todo)):
                self.resumed.popleft()
                self.kv.place(seq)
                self.prefilling = seq
                self.kv.reuse_prefix(seq)
            return
        if not self.waiting:
            return
        req = self.waiting[0]
        if req.cancelled.is_set():
            self.waiting.popleft()
            self.out.cancel_waiting(req)
            return
        if self.kv.free_slots() < req.params.n or not self._fits(req.params.n * (len(req.prompt) + 1)):
            return
        seq = self.prefilling = self._place(self.waiting.popleft())
        if req.params.prompt_logprobs:
            seq.prompt_logprobs = [None]
        else:
            self.kv.reuse_prefix(seq)

    def _place(self, req: Request) -> Seq:
        """The first sequence of req, in the next free slot, its whole prompt still to feed."""
        seq = self.out.new_seq(req, 0)
        seq.order = next(self._order)
        self.kv.place(seq)
        seq.todo = list(req.prompt)
        return seq

    def _admit_whole(self, budget: int) -> list[Seq]:
        """Admit the waiting prompts that fit whole in `budget` tokens (one choice each, no
        prompt logprobs), for one packed prefill; none while a long prompt is mid-way."""
        group: list[Seq] = []
        while self.prefilling is None and self.waiting and self.kv.free_slots() > 0 and not self.resumed:
            req = self.waiting[0]
            p = req.params
            if req.cancelled.is_set() or p.n != 1 or p.prompt_logprobs or p.max_new_tokens == 0:
                break
            if len(req.prompt) > budget or not self._fits(len(req.prompt) + 1):
                break
            seq = self._place(self.waiting.popleft())
            self.kv.reuse_prefix(seq)
            budget -= len(seq.todo)
            group.append(seq)
        return group

    def _prefill_whole(self, group: list[Seq]) -> int:
        """One forward for several whole prompts packed in a row; each then samples its
        first token. Returns the prompt tokens computed."""
        n = sum(len(s.todo) for s in group)
        logits, top = self.runner.prefill_packed([(s.slot, s.todo) for s in group])
        for s in group:
            s.fed += len(s.todo)
            s.todo = []
        self.kv.remember_burst(group)
        self.prefill_tokens += n
        self._accept(group, logits, top)
        return n

    # -- model calls ---------------------------------------------------------------------
    def _forward_chunk(self, seq: Seq, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Feed ids into seq's slot; logits (T, V) of every position, or (1, V) of the last."""
        return self.runner.prefill_chunk(seq.slot, ids, all_logits)

    def _prefill(self, budget: int) -> int:
        """Feed up to `budget` prompt tokens of the sequence being admitted; returns how many."""
        seq = self.prefilling
        if seq is None:
            return 0
        if len(seq.todo) == budget + 1 and budget > 2:
            budget -= 1  # leave two tokens, not one, for the next chunk: see runner.prefill_chunk
        ids, seq.todo = seq.todo[:budget], seq.todo[budget:]
        want_all = seq.prompt_logprobs is not None and not seq.resumed
        logits = self._forward_chunk(seq, ids, all_logits=want_all)
        if want_all:
            lp = logits.log_softmax(-1)
            nxt = ids[1:] + (seq.todo[:1] if seq.todo else [])
            got = lp[torch.arange(len(nxt)), torch.tensor(nxt, dtype=torch.long)].tolist() if nxt else []
            seq.prompt_logprobs.extend(got)  # type: ignore[union-attr]
        seq.fed += len(ids)
        self.prefill_tokens += len(ids)
        if seq.todo:
            return len(ids)
        self.prefilling = None
        if seq.resumed:  # back where it was preempted: it samples on
            seq.resumed = False
            self._accept([seq], logits[-1:])
            return len(ids)
        self.kv.remember_prefix(seq)
        req = seq.req
        if req.params.max_new_tokens == 0:  # scoring a prompt only
            self.out.finish(seq, "length")
            return len(ids)
        group = [seq]
        for i in range(1, req.params.n):  # n > 1 shares this one prefill
            sib = self.out.new_seq(req, i)
            sib.fed, sib.order = seq.fed, next(self._order)
            self.kv.fork(seq, sib)
            group.append(sib)
        last = logits[-1:].expand(len(group), -1)
        self._accept(group, last)
        return len(ids)

    def _decode(self) -> None:
        n = self.kv.decoding()
        if n == 0:
            return
        batch = self.live[:n]
        ids = [s.todo[0] for s in batch]
        for s in batch:
            s.extra.append(s.todo[0])
            s.todo = []
            s.fed += 1
        logits, top = self.runner.decode(ids)
        self._accept(batch, logits, top)

    # -- after sampling ------------------------------------------------------------------
    def _accept(self, seqs: list[Seq], logits: torch.Tensor, top: torch.Tensor | None = None) -> None:
        """Sample each sequence's next token from its row of logits (top: their argmax,
        where the decode graph computed it) and act on it. A turn whose built-in tools ran
        goes on at once: their results are fed and its next token sampled."""
        banned = [self.out.banned(s) for s in seqs]
        draws = sample_batch(logits, [s.sampler for s in seqs], banned, top)
        # Inside closing_together: a sequence that finishes here keeps its slot until the
        # end, so the slots of the ones fed below stay where they are.
        with self.out.closing_together():
            fed = [(s, feed) for s, d in zip(seqs, draws) if (feed := self.out.take(s, d))]
            if not fed:
                return
            # Every tool turn of this step goes through one packed forward, not one each:
            # under load many calculator answers come back together.
            after, after_top = self.runner.prefill_packed([(s.slot, feed) for s, feed in fed])
            for s, feed in fed:
                s.fed += len(feed)
                s.extra += feed
            self._accept([s for s, _ in fed], after, after_top)

    # -- the step ------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        with self.out.closing_together():
            for s in [s for s in self.live if s.req.cancelled.is_set()]:
                self.out.finish(s, "cancelled")
            for s in [s for s in self.resumed if s.req.cancelled.is_set()]:
                self.resumed.remove(s)
                self.out.finish(s, "cancelled")
        if any(r.cancelled.is_set() for r in self.waiting):
            keep = deque(r for r in self.waiting if not r.cancelled.is_set())
            for r in self.waiting:
                if r.cancelled.is_set():
                    self.out.cancel_waiting(r)
            self.waiting = keep

    @torch.inference_mode()
    def step(self) -> None:
        try:
            self._drop_cancelled()
            self._preempt_over_budget()
            # Up to `chunk` prompt tokens per step: one long prompt's next chunk, or several
            # short prompts in turn, so many arrivals start quickly and running streams wait
            # at most one chunk's time.
            budget = self.chunk
            if not self.kv.decoding():
                # Nothing is decoding, so no stream waits on this prefill: take more prompt
                # at once (fewer, larger forwards, and the batch fills before it decodes).
                budget = self.idle_chunk
            while budget > 0:
                # Short prompts that fit whole go through one packed forward; a long one (or
                # one asking for n > 1 or prompt logprobs) goes alone, chunk by chunk.
                group = self._admit_whole(budget)
                if group:
                    budget -= self._prefill_whole(group)
                    continue
                self._admit()
                used = self._prefill(budget)
                if used == 0:
                    break
                budget -= used
            self._decode()
        finally:
            self.out.publish()
