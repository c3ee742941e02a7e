"""The packed prefill as one compiled graph, on CPUs: several whole prompts in one forward.

When a burst of requests arrives, the scheduler has their prompts run packed in one row
(runner.prefill_packed). Its matmuls already run at the CPU's peak eagerly; what the
graph removes is the rest: a dozen elementwise passes per layer (norms, rotary embeddings,
SwiGLU) fused into a few, and the Python loop over prompts for attention, which runs as one
C++ op (kernels/cpu/ops.py's prefill_attention, which the model's attention calls once the
decode step has prepared it: the runner compiles this graph only then). 32 prompts of 64 tokens on the
demo model, bf16, 2 EPYC cores: 58-66 ms against 73-80 ms eager, with an SDPA call per
prompt inside the op; its own kernel for short prompts took the attention from 15 to 7 ms
of that.

The graph reads the cache and returns the new keys/values, which are stored afterwards
(engine/decode.py says why). Packed length and prompt count are symbolic; torch
specialises a count of 1, so one prompt and several prompts are two graphs, both compiled
by `warm_up` (the runner's, with the decode step) and kept in torch's on-disk cache. A
single token goes eagerly. The weights stay inputs of the graph (no freezing): the matmuls
gain nothing from it at these sizes, and the graph stays valid while an RL run changes the
weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx.experimental._config as fx_config

from chatsmith.common.log import warn
from chatsmith.engine import aot
from chatsmith.engine.decode import compile_own
from chatsmith.model.attention import AttnMeta
from chatsmith.model.gpt import GPT
from chatsmith.model.kv_cache import SlotKVCache


class CompiledPrefill:
    def __init__(self, model: GPT, cache: SlotKVCache, ahead: bool = False) -> None:
        """ahead: built ahead of time and kept on disk (engine/aot.py), as the decode step."""
        self.model, self.cache, self.ahead = model, cache, ahead
        self._run: Any = compile_own(CompiledPrefill._forward, self)  # or, warmed up, the AOT step
        self._warm = False

    def _forward(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        slots: torch.Tensor,
        past: torch.Tensor,
        lens: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        meta = AttnMeta(k, v, pos, past, slots=slots, lens=lens)
        h = self.model.hidden_states(ids[None], meta)[0]
        logits = self.model.lm_head(h[lens.cumsum(0) - 1]).float()  # each prompt's last token
        return logits, logits.argmax(-1), torch.stack(meta.new_k), torch.stack(meta.new_v)

    def __call__(self, prompts: list[tuple[int, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: (slot, ids) each, fed after what the slot holds -> the logits (S, V) of
        each prompt's last token and their argmax (S,); the cache holds the prompts after."""
        if not self._warm:
            self.warm_up()
        dev = self.cache.device
        lengths = [self.cache.room(s, len(p)) for s, p in prompts]  # before anything runs
        ids = torch.tensor([t for _, p in prompts for t in p], dtype=torch.long, device=dev)
        if ids.numel() < 2:
            raise ValueError("a compiled prefill needs at least 2 tokens (one goes eagerly)")
        pos = torch.cat([torch.arange(P, P + len(p)) for P, (_, p) in zip(lengths, prompts)]).to(dev)
        slots = torch.tensor([s for s, _ in prompts], dtype=torch.long, device=dev)
        past = torch.tensor(lengths, dtype=torch.long, device=dev)
        lens = torch.tensor([len(p) for _, p in prompts], dtype=torch.long, device=dev)
        logits, top, k, v = self._run(ids, pos, self.cache.k, self.cache.v, slots, past, lens)
        self.cache.store_prompts(k, v, [(s, len(p)) for s, p in prompts])
        return logits, top

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Load or build the ahead-of-time step, else compile both graphs now, for one
        prompt and for several (on scratch inputs; the cache is only read)."""
        if self.ahead:
            try:
                self._run = aot.load_or_build(aot.PrefillStep(self.model), self.cache.k)
                self._warm = True
                return
            except Exception as e:  # export and AOTInductor raise many kinds
                warn(f"the ahead-of-time prefill failed ({type(e).__name__}: {e}); compiling it in process")
        dev = self.cache.device
        # Sizes that happen to be equal while tracing (3 tokens, 3 layers) must not become
        # one symbol, or a later call with them unequal would compile again.
        with fx_config.patch(use_duck_shape=False):
            for lens in ([3], [2, 3]):
                ids = torch.zeros(sum(lens), dtype=torch.long, device=dev)
                pos = torch.cat([torch.arange(n) for n in lens]).to(dev)
                slots = torch.arange(len(lens), device=dev)
                past = torch.zeros(len(lens), dtype=torch.long, device=dev)
                lens_t = torch.tensor(lens, dtype=torch.long, device=dev)
                self._run(ids, pos, self.cache.k, self.cache.v, slots, past, lens_t)
        self._warm = True
