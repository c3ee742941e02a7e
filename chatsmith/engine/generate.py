"""Generation with the KV cache, with the built-in tools run inside the loop.

The engine speaks token ids. A turn ends at `<|im_end|>`; when the turn contained a
`<tool_call>` for a built-in tool, the engine runs it, feeds the result back as a tool
turn (the chat format's own bytes) and lets the model continue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from chatsmith.engine.sampling import SamplingParams, sample
from chatsmith.engine.tools import TOOLS, run_tool
from chatsmith.model.gpt import GPT
from chatsmith.model.kv_cache import KVCache
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import tool_response_ids
from chatsmith.tokenizer.special import TOOL_CALL, TOOL_CALL_END

MAX_TOOL_ROUNDS = 4


@dataclass
class Event:
    """One thing that happened: a sampled token, a tool call, its result, or the end."""

    kind: str  # "token" | "tool_call" | "tool_result" | "done"
    token: int = -1
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def parse_tool_call(text: str) -> tuple[str, Any] | str:
    """The (name, arguments) in a Hermes tool-call body, or an error string."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as e:
        return f"error: malformed tool call JSON ({e.msg})"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return "error: a tool call needs a name"
    return obj["name"], obj.get("arguments", {})


class Generator:
    """Runs one sequence at a time through a model with a KV cache."""

    def __init__(self, model: GPT, tok: BPETokenizer, autocast: Any = None) -> None:
        self.model, self.tok = model, tok
        self.device = model.embed_tokens.weight.device
        self.autocast = autocast
        self.call_start, self.call_end = tok.token_id(TOOL_CALL), tok.token_id(TOOL_CALL_END)

    def _forward(self, ids: list[int], cache: KVCache) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        if self.autocast is not None:
            with self.autocast:
                return self.model(x, cache=cache)[:, -1, :]
        return self.model(x, cache=cache)[:, -1, :]

    @torch.inference_mode()
    def stream(self, prompt: list[int], params: SamplingParams, run_tools: bool = True) -> Iterator[Event]:
        params.validate()
        cfg = self.model.cfg
        capacity = min(
            self.model.rope_cos.size(0), len(prompt) + params.max_new_tokens + 256 * MAX_TOOL_ROUNDS
        )
        if len(prompt) >= capacity:
            yield Event("done", data={"finish_reason": "length", "generated": 0})
            return
        cache = KVCache(
            1,
            cfg.n_layer,
            cfg.n_kv_head,
            cfg.head_dim,
            capacity,
            self.device,
            self.model.embed_tokens.weight.dtype,
        )
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed)
        logits = self._forward(prompt, cache)
        generated, rounds = 0, 0
        call_tokens: list[int] | None = None
        pending: list[tuple[str, Any] | str] = []
        while True:
            if generated >= params.max_new_tokens or cache.length + 1 >= capacity:
                yield Event("done", data={"finish_reason": "length", "generated": generated})
                return
            t = int(sample(logits, params, gen)[0])
            generated += 1
            yield Event("token", t, self.tok.decode([t]))
            if t == self.call_start:
                call_tokens = []
            elif t == self.call_end and call_tokens is not None:
                parsed = parse_tool_call(self.tok.decode(call_tokens))
                pending.append(parsed)
                yield Event("tool_call", data={"call": parsed})
                call_tokens = None
            elif call_tokens is not None:
                call_tokens.append(t)
            if t == self.tok.im_end_id and not params.ignore_eos:
                builtin = [p for p in pending if isinstance(p, str) or p[0] in TOOLS]
                if not (run_tools and pending and len(builtin) == len(pending) and rounds < MAX_TOOL_ROUNDS):
                    reason = "tool_calls" if pending else "stop"
                    yield Event(
                        "done", data={"finish_reason": reason, "generated": generated, "tool_calls": pending}
                    )
                    return
                rounds += 1
                results = [p if isinstance(p, str) else run_tool(p[0], p[1]) for p in pending]
                pending = []
                # Several results go into one tool turn, as the chat format renders them.
                feed = [t]
                for r in results:
                    yield Event("tool_result", text=r)
                feed += tool_response_ids(self.tok, "\n</tool_response>\n<tool_response>\n".join(results))
                if cache.length + len(feed) >= capacity:
                    yield Event("done", data={"finish_reason": "length", "generated": generated})
                    return
                logits = self._forward(feed, cache)
                continue
            logits = self._forward([t], cache)


@torch.inference_mode()
def generate_uncached(
    model: GPT, prompt: list[int], max_new_tokens: int, stop_id: int | None = None
) -> list[int]:
    """Greedy decoding by a full forward pass per token: the reference the cache must match."""
    ids = list(prompt)
    device = model.embed_tokens.weight.device
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids], device=device))[:, -1, :]
        t = int(logits.argmax(-1))
        ids.append(t)
        if t == stop_id:
            break
    return ids[len(prompt) :]
