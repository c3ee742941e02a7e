"""Acting on sampled tokens: record each one, report it as events, and decide what its
sequence does next (decode on, finish, or feed tool results back at once).

Events are held per request until the end of the scheduler's step (`publish`), and
sequences that finish inside one batch of samples leave the cache's slots together
(`closing_together`), so a burst that ends at once moves few caches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from chatsmith.engine import tool_turns
from chatsmith.engine.kv_manager import KVManager
from chatsmith.engine.sampling import Draw, SeqSampler
from chatsmith.engine.sequence import Event, Request, Seq
from chatsmith.engine.text import TurnText, special_ids, token_id_or
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.special import BOS


class OutputProcessor:
    """Per-sequence output state (sampler, text) and what each sampled token leads to."""

    def __init__(
        self, tok: BPETokenizer, kv: KVManager, max_len: int, vocab: int, device: torch.device
    ) -> None:
        self.tok, self.kv, self.max_len = tok, kv, max_len
        self.vocab, self.device = vocab, device
        self.special = special_ids(tok)
        self.im_end = tok.im_end_id
        self.eos = {self.im_end, token_id_or(tok, BOS)} - {-1}
        self.touched: dict[int, tuple[Request, list[Event]]] = {}  # this step's events, per request
        self.closing: list[Seq] | None = None  # sequences done in this batch, removed together

    def new_seq(self, req: Request, index: int) -> Seq:
        return Seq(
            req=req,
            index=index,
            sampler=SeqSampler(req.params, self.vocab, self.device, req.prompt, seed_offset=index),
            text=TurnText(self.tok, req.params.stop, self.special),
        )

    # -- events --------------------------------------------------------------------------
    def emit(self, req: Request, ev: Event) -> None:
        if (held := self.touched.get(id(req))) is None:
            held = self.touched[id(req)] = (req, [])
        held[1].append(ev)

    def publish(self) -> None:
        """Hand this step's events to their requests. One wake-up per request per step: a
        reader woken per token would fight the scheduler thread for the GIL."""
        touched, self.touched = self.touched, {}
        for req, evs in touched.values():
            req.push_many(evs)

    def finish(self, seq: Seq, reason: str) -> None:
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
        self.emit(seq.req, Event("done", seq.index, text=text, data=data))
        if self.closing is not None:  # inside a batch: removed with the others at its end
            self.closing.append(seq)
        else:
            self.kv.remove([seq])

    def cancel_waiting(self, req: Request) -> None:
        """Finish every choice of a request that never started."""
        for i in range(req.params.n):
            req.completions[i] = self.new_seq(req, i).completion("cancelled")
            data = {"finish_reason": "cancelled", "prompt_tokens": len(req.prompt), "completion_tokens": 0}
            self.emit(req, Event("done", i, data={**data, "tool_calls": [], "tool_errors": []}))

    @contextlib.contextmanager
    def closing_together(self) -> Iterator[None]:
        """Sequences that finish inside leave the batch together at the end (`KVManager.remove`)."""
        outer, self.closing = self.closing, []
        try:
            yield
        finally:
            done, self.closing = self.closing, outer
            if done:
                self.kv.remove(done)

    # -- sampled tokens ------------------------------------------------------------------
    def banned(self, s: Seq) -> list[int]:
        """The tokens s may not sample yet: its stop tokens, until min_tokens are out."""
        p = s.req.params
        if s.generated >= p.min_tokens:
            return []
        return sorted(self.eos | set(p.stop_token_ids))

    def take(self, s: Seq, d: Draw) -> list[int]:
        """Record one sampled token of s and decide what happens next; returns the ids to
        feed s at once (tool results), or [] when the next decode step or nothing follows."""
        p, t = s.req.params, d.token
        s.sampler.observe(t)
        s.generated += 1
        s.out.append(t)
        if p.logprobs or p.top_logprobs:
            s.logprobs.append(d.logprob if d.logprob is not None else 0.0)
            s.top_logprobs.append(d.top)
        pushed = s.text.push(t)
        self.emit(s.req, Event("token", s.index, t, pushed.text, d.logprob, d.top))
        if pushed.call is not None:
            data = tool_turns.note_call(s, self.tok.decode(pushed.call))
            self.emit(s.req, Event("tool_call", s.index, data=data))
        if pushed.stopped:
            self.finish(s, "stop")
            return []
        is_eos = (t in self.eos and not p.ignore_eos) or t in p.stop_token_ids
        if is_eos:
            return self._end_turn(s, t)
        if s.generated >= p.max_new_tokens or s.fed >= self.max_len:
            self.finish(s, "length")
            return []
        s.todo = [t]  # fed at the next decode step
        return []

    def _end_turn(self, s: Seq, t: int) -> list[int]:
        """s sampled a stop token t: finish it, or run its built-in tools and return the ids
        that carry their results back."""
        calls = tool_turns.close_turn(s)
        results = tool_turns.run_builtin(s, calls, t == self.im_end)
        if results is None:
            self.finish(s, tool_turns.finish_reason(calls))
            return []
        # Built-in tools ran here and the model reads their answers in a tool turn.
        for r in results:
            self.emit(s.req, Event("tool_result", s.index, text=r))
        held = s.text.new_segment()
        if held:
            self.emit(s.req, Event("token", s.index, -1, held))
        feed = tool_turns.feed_ids(self.tok, t, results)
        if s.fed + len(feed) >= self.max_len or s.generated >= s.req.params.max_new_tokens:
            self.finish(s, "length")
            return []
        return feed
