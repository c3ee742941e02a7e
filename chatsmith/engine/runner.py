"""The model runner: the KV cache, and every forward pass the scheduler asks for.

In the manner of vLLM's v1 model runner: the scheduler decides what runs and hands over
token ids with their cache slots; the runner describes the forward to the model
(model/attention.py's AttnMeta: positions, what each slot holds, which slots), runs it
eagerly or through a compiled graph, and stores the keys and values the forward hands back
into the cache. The compiled graphs (engine/decode.py, engine/prefill.py) are built and
warmed up here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from chatsmith.common.log import warn
from chatsmith.engine.decode import CompiledDecode, decode_store
from chatsmith.engine.prefill import CompiledPrefill
from chatsmith.model.attention import AttnMeta
from chatsmith.model.gpt import GPT
from chatsmith.model.kv_cache import SlotKVCache


class ModelRunner:
    def __init__(
        self,
        model: GPT,
        n_slots: int,
        max_len: int,
        autocast: Any = None,
        compile: bool = False,
        freeze: bool = True,
    ) -> None:
        """n_slots cache slots of max_len tokens; autocast: a context manager for the forward
        passes (bf16 autocast), or None; compile: decode steps (and on CPUs packed prompts)
        through compiled graphs; freeze: with the weights as constants of the decode graph,
        for a model that will not change."""
        self.model, self.autocast = model, autocast
        w = model.embed_tokens.weight
        self.device = w.device
        c = model.cfg
        kv_dtype = cache_dtype(model, autocast, compile)
        self.cache = SlotKVCache(n_slots, c.n_layer, c.n_kv_head, c.head_dim, max_len, w.device, kv_dtype)
        self.decoder = CompiledDecode(model, self.cache, freeze) if compile else None
        # Packed prompts through one compiled graph too, where its C++ attention runs (CPUs).
        d = self.decoder
        self.prefiller = CompiledPrefill(model, self.cache, d.ahead) if d and d.kernel else None

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

    def prefill_chunk(self, slot: int, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Feed ids into slot after what it holds; logits (T, V) of every position, or (1, V) of the last.

        Through the compiled prefill graph where there is one, as packed prompts go: a prompt
        token is then computed alike whether its prompt came whole, in chunks or after a
        cached prefix (greedy decoding gives the same tokens either way)."""
        with self.autocast or contextlib.nullcontext():
            if self.prefiller is not None and not all_logits and len(ids) > 1:
                return self.prefiller([(slot, ids)])[0]
            return eager_prefill(self.model, self.cache, [(slot, ids)], last_only=not all_logits)

    def prefill_packed(
        self, prompts: list[tuple[int, list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Several whole prompts (slot, ids) in one forward -> the logits (S, V) of each one's
        last token, and their argmax (S,) where the compiled graph computed it, else None."""
        with self.autocast or contextlib.nullcontext():
            if self.prefiller is not None and sum(len(ids) for _, ids in prompts) > 1:
                return self.prefiller(prompts)
            return eager_prefill(self.model, self.cache, prompts), None

    def decode(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One new token for each of slots 0..n-1 -> logits (n, V), and their argmax (n,)
        where the compiled step computed it, else None. The cache moves on by one."""
        with self.autocast or contextlib.nullcontext():
            if self.decoder is not None:
                return self.decoder.step(torch.tensor(ids, dtype=torch.long, device=self.device))
            return eager_decode(self.model, self.cache, ids), None


def cache_dtype(model: GPT, autocast: Any = None, compile: bool = False) -> torch.dtype:
    """The KV cache's dtype, which is the attention's: the compute dtype (autocast's, or the
    weights'), except for eager decoding on CPUs, where ATen's attention for one query token
    is several times slower in bf16 than in float32. The compiled step (engine/decode.py)
    reads a bf16 cache at half the memory traffic of a float32 one."""
    w = model.embed_tokens.weight
    if w.device.type == "cpu" and not compile:
        return torch.float32
    return getattr(autocast, "fast_dtype", None) or w.dtype


def eager_prefill(
    model: GPT, cache: SlotKVCache, prompts: list[tuple[int, list[int]]], last_only: bool = True
) -> torch.Tensor:
    """Prompts (slot, ids) in one row, each after what its slot holds, through the eager
    forward -> the logits of each prompt's last token (S, V), or with last_only False (one
    prompt) of every token (T, V). The cache holds the prompts after."""
    # Every prompt's room is checked before anything runs.
    spans = [(slot, cache.room(slot, len(ids)), len(ids)) for slot, ids in prompts]
    meta = AttnMeta.packed(cache.k, cache.v, spans, stage=True)
    x = torch.tensor([[t for _, ids in prompts for t in ids]], dtype=torch.long, device=cache.device)
    h = model.hidden_states(x, meta)[0]
    if last_only:
        h = h[meta.lens.cumsum(0) - 1]
    logits = model.lm_head(h).float()
    cache.store_prompts(torch.stack(meta.new_k), torch.stack(meta.new_v), [(s, T) for s, _, T in spans])
    return logits


def eager_decode(model: GPT, cache: SlotKVCache, ids: list[int]) -> torch.Tensor:
    """One new token for each of slots 0..n-1 through the eager forward -> logits (n, V);
    the cache moves on by one."""
    past = cache.decode_lengths(len(ids))
    meta = AttnMeta.rows(cache.k, cache.v, past, stage=True)
    x = torch.tensor(ids, dtype=torch.long, device=cache.device)
    h = model.hidden_states(x[:, None], meta)[:, 0]
    logits = model.lm_head(h).float()
    cache.append(torch.stack(meta.new_k), torch.stack(meta.new_v), meta.past, decode_store(cache))
    return logits
