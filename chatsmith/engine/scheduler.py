"""Continuous batching: the step that advances every running sequence by one token.

Each `step()` does, in order: drop cancelled requests, admit waiting ones while cache
slots are free, run one chunk of prompt (prefill) for the sequence being admitted, then
one decode step for all running sequences together. Requests therefore join and leave
between decode steps, and a long prompt is fed in chunks so running streams keep going.
A step with nothing to decode takes up to IDLE_CHUNKS chunks of prompt: no stream waits on
it, and a burst of requests then starts decoding together instead of joining four by four
(32 requests of 64 tokens at once on the demo model: 5-10 % more tokens per second in all).

Cache layout (`SlotKVCache`): running sequences sit in slots 0..n-1, the one being
prefilled after them; sequences that finish in the same step leave together, and only the
survivors past the new end move into their slots, so a decode step always attends to a
contiguous view. A few extra slots hold the keys and values of recent prompts: a new
prompt that starts with one of them (the same system prompt, the earlier turns of a chat)
copies that prefix instead of computing it; of a burst packed in one prefill, only the
prompts the store will keep are copied in.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from chatsmith.common.log import warn
from chatsmith.engine.decode import CompiledDecode
from chatsmith.engine.prefill import CompiledPrefill
from chatsmith.engine.sampling import Draw, SeqSampler, sample_batch
from chatsmith.engine.sequence import Event, Request, Seq
from chatsmith.engine.text import TurnText, special_ids, token_id_or
from chatsmith.engine.tools import TOOLS, run_tool
from chatsmith.model.gpt import GPT
from chatsmith.model.kv_cache import SlotKVCache
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import tool_response_ids
from chatsmith.tokenizer.special import BOS

MAX_TOOL_ROUNDS = 4
IDLE_CHUNKS = 8  # prefill chunks per step while no sequence decodes
MIN_PREFIX = 16  # shorter shared prefixes are cheaper to recompute than to look up


def worth_remembering(prompt: list[int]) -> bool:
    """Whether a prompt is long enough to keep in the prefix store."""
    return len(prompt) >= 2 * MIN_PREFIX


def parse_tool_call(text: str) -> tuple[str, Any] | str:
    """The (name, arguments) in a Hermes tool-call body, or an error string."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as e:
        return f"error: malformed tool call JSON ({e.msg})"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return "error: a tool call needs a name"
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return "error: tool call arguments are not JSON"
    return obj["name"], args


class Scheduler:
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
    ) -> None:
        """compile: run decode steps as a compiled graph (engine/decode.py); freeze: with
        the weights as constants of that graph, for a model that will not change."""
        self.model, self.tok = model, tok
        self.autocast = autocast  # a context manager for the forward passes (bf16 autocast), or None
        w = model.embed_tokens.weight
        self.device, self.vocab = w.device, model.cfg.vocab_size
        c = model.cfg
        self.n_slots, self.max_len, self.chunk = n_slots, max_len, prefill_chunk
        self.idle_chunk = IDLE_CHUNKS * prefill_chunk  # the prefill budget of a step with no decoding
        # Attention runs in the cache's dtype: the compute dtype (autocast's, or the weights'),
        # except for eager decoding on CPUs, where ATen's attention for one query token is
        # several times slower in bf16 than in float32. The compiled step (engine/decode.py)
        # reads a bf16 cache at half the memory traffic of a float32 one.
        kv_dtype = getattr(autocast, "fast_dtype", None) or w.dtype
        if w.device.type == "cpu" and not compile:
            kv_dtype = torch.float32
        self.cache = SlotKVCache(
            n_slots + prefix_slots, c.n_layer, c.n_kv_head, c.head_dim, max_len, w.device, kv_dtype
        )
        self.decoder = CompiledDecode(model, self.cache, freeze) if compile else None
        # Packed prompts through one compiled graph too, where its C++ attention runs (CPUs).
        self.prefiller = CompiledPrefill(model, self.cache) if self.decoder and self.decoder.kernel else None
        self.live: list[Seq] = []  # live[i] sits in cache slot i
        self.prefilling: Seq | None = None  # always the last of `live` while it runs
        self.waiting: deque[Request] = deque()
        # Prefix store: slot -> the prompt tokens whose keys/values it holds (LRU order).
        self.prefixes: dict[int, list[int]] = {n_slots + i: [] for i in range(prefix_slots)}
        self.special = special_ids(tok)
        self.im_end = tok.im_end_id
        self.eos = {self.im_end, token_id_or(tok, BOS)} - {-1}
        self.prefix_hits = 0
        self.prefill_tokens = 0  # prompt tokens computed (not copied from a cached prefix)
        self.touched: dict[int, tuple[Request, list[Event]]] = {}  # this step's events, per request
        self.closing: list[Seq] | None = None  # sequences done in this batch, removed together
        self.prefix_tokens_reused = 0

    def warm_up(self) -> None:
        """Compile the decode step now, if asked to; without a working compiler (inductor
        needs a C++ one on CPUs), decode eagerly instead of failing the first request."""
        if self.decoder is None:
            return
        try:
            self.decoder.warm_up()
        except Exception as e:  # torch raises many kinds here (BackendCompilerFailed, OSError, ...)
            warn(f"compiling the decode step failed, decoding eagerly: {type(e).__name__}: {e}")
            self.decoder = self.prefiller = None
            return
        if self.prefiller is None:
            return
        try:
            self.prefiller.warm_up()
        except Exception as e:
            warn(f"compiling the packed prefill failed, prefilling eagerly: {type(e).__name__}: {e}")
            self.prefiller = None

    # -- bookkeeping ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.live or self.waiting)

    def holds(self, req: Request) -> bool:
        """Whether req is still waiting or running here."""
        return any(r is req for r in self.waiting) or any(s.req is req for s in self.live)

    def free_slots(self) -> int:
        return self.n_slots - len(self.live)

    def decoding(self) -> int:
        """How many sequences the next decode step runs: slots 0..n-1, all of `live` but the
        one being prefilled (always last)."""
        return len(self.live) - (self.prefilling is not None)

    def _move(self, seq: Seq, slot: int) -> None:
        self.cache.copy_slot(seq.slot, slot)
        self.cache.free(seq.slot)
        seq.slot = slot

    def _remove(self, seqs: list[Seq]) -> None:
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

    def _finish(self, seq: Seq, reason: str) -> None:
        text = seq.text.flush()
        comp = seq.completion(reason)
        seq.req.completions[seq.index] = comp
        data: dict[str, Any] = {
            "finish_reason": reason,
            "prompt_tokens": len(seq.req.prompt),
            "completion_tokens": len(seq.out),
            "tool_calls": seq.tool_calls,
            "tool_errors": seq.tool_errors,
        }
        if seq.prompt_logprobs is not None:
            data["prompt_logprobs"] = seq.prompt_logprobs
        self._emit(seq.req, Event("done", seq.index, text=text, data=data))
        if self.closing is not None:  # inside a batch: removed with the others at its end
            self.closing.append(seq)
        else:
            self._remove([seq])

    def _emit(self, req: Request, ev: Event) -> None:
        if (held := self.touched.get(id(req))) is None:
            held = self.touched[id(req)] = (req, [])
        held[1].append(ev)

    # -- admission -----------------------------------------------------------------------
    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def _admit(self) -> None:
        if self.prefilling is not None or not self.waiting:
            return
        req = self.waiting[0]
        if req.cancelled.is_set():
            self.waiting.popleft()
            self._cancel_waiting(req)
            return
        if self.free_slots() < req.params.n:
            return
        seq = self.prefilling = self._place(self.waiting.popleft())
        if req.params.prompt_logprobs:
            seq.prompt_logprobs = [None]
        else:
            self._reuse_prefix(seq)

    def _place(self, req: Request) -> Seq:
        """The first sequence of req, in the next free slot, its whole prompt still to feed."""
        seq = self._new_seq(req, 0)
        seq.slot = len(self.live)
        self.live.append(seq)
        seq.todo = list(req.prompt)
        return seq

    def _admit_whole(self, budget: int) -> list[Seq]:
        """Admit the waiting prompts that fit whole in `budget` tokens (one choice each, no
        prompt logprobs), for one packed prefill; none while a long prompt is mid-way."""
        group: list[Seq] = []
        while self.prefilling is None and self.waiting and self.free_slots() > 0:
            req = self.waiting[0]
            p = req.params
            if req.cancelled.is_set() or p.n != 1 or p.prompt_logprobs or p.max_new_tokens == 0:
                break
            if len(req.prompt) > budget:
                break
            seq = self._place(self.waiting.popleft())
            self._reuse_prefix(seq)
            budget -= len(seq.todo)
            group.append(seq)
        return group

    def _prefill_whole(self, group: list[Seq]) -> int:
        """One forward for several whole prompts packed in a row; each then samples its
        first token. Returns the prompt tokens computed."""
        n = sum(len(s.todo) for s in group)
        top = None
        with self.autocast or contextlib.nullcontext():
            if self.prefiller is not None and n > 1:
                logits, top = self.prefiller([(s.slot, s.todo) for s in group])
            else:
                self.cache.bind_prefills([(s.slot, len(s.todo)) for s in group])
                ends = torch.tensor([len(s.todo) for s in group], device=self.device).cumsum(0) - 1
                x = torch.tensor([[t for s in group for t in s.todo]], dtype=torch.long, device=self.device)
                h = self.model.hidden_states(x, cache=self.cache)[0]
                logits = self.model.lm_head(h[ends]).float()  # (len(group), V): each prompt's last
        for s in group:
            s.fed += len(s.todo)
            s.todo = []
        # Only the last few prompts of a burst would stay in the prefix store: remember
        # just those instead of copying each one in only to push it out again.
        kept: list[Seq] = []
        for s in reversed(group):
            if len(kept) == len(self.prefixes):
                break
            if worth_remembering(s.req.prompt) and all(k.req.prompt != s.req.prompt for k in kept):
                kept.append(s)
        for s in reversed(kept):
            self._remember_prefix(s)
        self.prefill_tokens += n
        self._accept(group, logits, top)
        return n

    def _new_seq(self, req: Request, index: int) -> Seq:
        return Seq(
            req=req,
            index=index,
            sampler=SeqSampler(req.params, self.vocab, self.device, req.prompt, seed_offset=index),
            text=TurnText(self.tok, req.params.stop, self.special),
        )

    def _cancel_waiting(self, req: Request) -> None:
        for i in range(req.params.n):
            req.completions[i] = self._new_seq(req, i).completion("cancelled")
            data = {"finish_reason": "cancelled", "prompt_tokens": len(req.prompt), "completion_tokens": 0}
            self._emit(req, Event("done", i, data={**data, "tool_calls": [], "tool_errors": []}))

    def _reuse_prefix(self, seq: Seq) -> None:
        prompt = seq.req.prompt
        best, best_slot = 0, -1
        for slot, toks in self.prefixes.items():
            n = 0
            for a, b in zip(toks, prompt):
                if a != b:
                    break
                n += 1
            if n > best:
                best, best_slot = n, slot
        best = min(best, len(prompt) - 1)  # the last prompt token must run to give logits
        if best >= MIN_PREFIX:
            self.cache.copy_slot(best_slot, seq.slot, best)
            seq.fed, seq.todo = best, list(prompt[best:])
            self.prefixes[best_slot] = self.prefixes.pop(best_slot)  # most recently used
            self.prefix_hits += 1
            self.prefix_tokens_reused += best

    def _remember_prefix(self, seq: Seq) -> None:
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

    # -- model calls ---------------------------------------------------------------------
    def _forward_chunk(self, seq: Seq, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Feed ids into seq's slot; logits (T, V) of every position, or (1, V) of the last."""
        self.cache.bind_prefill(seq.slot, len(ids))
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        with self.autocast or contextlib.nullcontext():
            h = self.model.hidden_states(x, cache=self.cache)[0]
            return self.model.lm_head(h if all_logits else h[-1:]).float()

    def _prefill(self, budget: int) -> int:
        """Feed up to `budget` prompt tokens of the sequence being admitted; returns how many."""
        seq = self.prefilling
        if seq is None:
            return 0
        ids, seq.todo = seq.todo[:budget], seq.todo[budget:]
        want_all = seq.prompt_logprobs is not None
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
        self._remember_prefix(seq)
        req = seq.req
        if req.params.max_new_tokens == 0:  # scoring a prompt only
            self._finish(seq, "length")
            return len(ids)
        group = [seq]
        for i in range(1, req.params.n):  # n > 1 shares this one prefill
            sib = self._new_seq(req, i)
            sib.slot, sib.fed = len(self.live), seq.fed
            self.live.append(sib)
            self.cache.copy_slot(seq.slot, sib.slot)
            group.append(sib)
        last = logits[-1:].expand(len(group), -1)
        self._accept(group, last)
        return len(ids)

    def _decode(self) -> None:
        n = self.decoding()
        if n == 0:
            return
        batch = self.live[:n]
        x = torch.tensor([s.todo[0] for s in batch], dtype=torch.long, device=self.device)
        for s in batch:
            s.todo = []
            s.fed += 1
        top = None
        with self.autocast or contextlib.nullcontext():
            if self.decoder is not None:
                logits, top = self.decoder.step(x)
            else:
                self.cache.bind_decode(n)
                h = self.model.hidden_states(x[:, None], cache=self.cache)[:, 0]
                logits = self.model.lm_head(h).float()
        self._accept(batch, logits, top)

    # -- after sampling ------------------------------------------------------------------
    def _accept(self, seqs: list[Seq], logits: torch.Tensor, top: torch.Tensor | None = None) -> None:
        """Sample each sequence's next token from its row of logits (top: their argmax,
        where the decode graph computed it) and act on it."""
        banned = [self._banned(s) for s in seqs]
        draws = sample_batch(logits, [s.sampler for s in seqs], banned, top)
        with self._closing_together():
            for s, d in zip(seqs, draws):
                self._take(s, d)

    @contextlib.contextmanager
    def _closing_together(self) -> Iterator[None]:
        """Sequences that finish inside leave the batch together at the end (`_remove`)."""
        outer, self.closing = self.closing, []
        try:
            yield
        finally:
            done, self.closing = self.closing, outer
            if done:
                self._remove(done)

    def _banned(self, s: Seq) -> list[int]:
        p = s.req.params
        if s.generated >= p.min_tokens:
            return []
        return sorted(self.eos | set(p.stop_token_ids))

    def _take(self, s: Seq, d: Draw) -> None:
        """Record one sampled token of s and decide what happens next."""
        p, t = s.req.params, d.token
        s.sampler.observe(t)
        s.generated += 1
        s.out.append(t)
        if p.logprobs or p.top_logprobs:
            s.logprobs.append(d.logprob if d.logprob is not None else 0.0)
            s.top_logprobs.append(d.top)
        pushed = s.text.push(t)
        self._emit(s.req, Event("token", s.index, t, pushed.text, d.logprob, d.top))
        if pushed.call is not None:
            parsed = parse_tool_call(self.tok.decode(pushed.call))
            s.calls.append(parsed)
            data = {"error": parsed} if isinstance(parsed, str) else dict(zip(("name", "arguments"), parsed))
            self._emit(s.req, Event("tool_call", s.index, data=data))
        if pushed.stopped:
            return self._finish(s, "stop")
        is_eos = (t in self.eos and not p.ignore_eos) or t in p.stop_token_ids
        if is_eos:
            return self._end_turn(s, t)
        if s.generated >= p.max_new_tokens or s.fed >= self.max_len:
            return self._finish(s, "length")
        s.todo = [t]  # fed at the next decode step

    def _end_turn(self, s: Seq, t: int) -> None:
        calls, s.calls = s.calls, []
        for c in calls:
            if isinstance(c, str):
                s.tool_errors.append(c)
            else:
                s.tool_calls.append({"name": c[0], "arguments": c[1]})
        builtin = all(isinstance(c, str) or c[0] in TOOLS for c in calls)
        if not (calls and builtin and s.req.run_tools and t == self.im_end and s.rounds < MAX_TOOL_ROUNDS):
            has_client_call = any(not isinstance(c, str) for c in calls)
            return self._finish(s, "tool_calls" if has_client_call else "stop")
        # Built-in tools run here and the model reads their answers in a tool turn.
        s.rounds += 1
        results = [c if isinstance(c, str) else run_tool(c[0], c[1]) for c in calls]
        for r in results:
            s.tool_results.append(r)
            self._emit(s.req, Event("tool_result", s.index, text=r))
        held = s.text.new_segment()
        if held:
            self._emit(s.req, Event("token", s.index, -1, held))
        feed = [t, *tool_response_ids(self.tok, "\n</tool_response>\n<tool_response>\n".join(results))]
        if s.fed + len(feed) >= self.max_len or s.generated >= s.req.params.max_new_tokens:
            return self._finish(s, "length")
        logits = self._forward_chunk(s, feed)
        s.fed += len(feed)
        self._accept([s], logits)

    # -- the step ------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        with self._closing_together():
            for s in [s for s in self.live if s.req.cancelled.is_set()]:
                self._finish(s, "cancelled")
        if any(r.cancelled.is_set() for r in self.waiting):
            keep = deque(r for r in self.waiting if not r.cancelled.is_set())
            for r in self.waiting:
                if r.cancelled.is_set():
                    self._cancel_waiting(r)
            self.waiting = keep

    @torch.inference_mode()
    def step(self) -> None:
        try:
            self._drop_cancelled()
            # Up to `chunk` prompt tokens per step: one long prompt's next chunk, or several
            # short prompts in turn, so many arrivals start quickly and running streams wait
            # at most one chunk's time.
            budget = self.chunk
            if not self.decoding():
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
            # One wake-up per request per step: a reader woken per token would fight the
            # scheduler thread for the GIL.
            touched, self.touched = self.touched, {}
            for req, evs in touched.values():
                req.push_many(evs)
