"""The decode step as one compiled graph: a running sequence's next token in a fraction of
the eager time.

A decode step computes one token for each running sequence: a few dozen small operations
per layer, each of which costs more to dispatch from Python than to run at these sizes.
torch.compile turns the step into one graph (fused elementwise kernels, the weights packed
for the matmuls when `freeze`), so the time goes to the arithmetic. With bf16 weights on a
CPU with AVX512-BF16 the matmuls are chatsmith's own (kernels/cpu/matmul.py): at a few rows
oneDNN's set-up cost more than its arithmetic, and a token at batch 1 took 0.4 ms instead of
0.7 on the demo model (`chatsmith bench generate`). A long prompt's chunks stay eager: they
are large enough that dispatch does not matter; short prompts packed together have a
compiled graph of their own on CPUs (engine/prefill.py).

Two graphs cover every step: one for a single sequence (torch specialises a size of 1) and
one for any number above, with the batch and the context length symbolic. `warm_up`
compiles both before the first request waits for them; torch keeps the result in its
on-disk cache, so later starts take seconds.

On CPUs the attention inside the graph is the C++ kernel of kernels/cpu/ops.py, called as
one op (one pass over each sequence's keys and values); where it cannot be built, for a
head size it lacks, or with the kernels switched off, the model's plain cached attention
(model/attention.py) is compiled instead. Either way the graph only reads the cache: it
hands the step's keys and values back, stored after it (a graph that writes into its input
storage makes inductor copy the whole storage every step).

Where the C++ attention runs and the model is frozen, the step is not compiled in process
at all: engine/aot.py builds it once ahead of time (AOTInductor) and later starts load it
in about a second (SmolLM2-135M: 1.6 s against 91 s of tracing); CHATSMITH_AOT=0 keeps
the in-process graphs described here.

`freeze` makes the weights constants of the graph (faster on CPUs), fuses the q/k/v and
gate/up projections and packs the weights for chatsmith's matmuls (chatsmith.kernels'
`prepare`, called here): the model must not change afterwards, so an engine used for RL
rollouts, whose weights move, leaves it off.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

import torch
import torch._inductor.config as inductor_config

from chatsmith import kernels
from chatsmith.common.log import warn
from chatsmith.common.paths import home
from chatsmith.engine import aot
from chatsmith.kernels.cpu import build, ops
from chatsmith.model.attention import AttnMeta
from chatsmith.model.gpt import GPT
from chatsmith.model.kv_cache import SlotKVCache, StoreFn


def compile_own(method: Callable[..., Any], obj: object) -> Callable[..., Any]:
    """torch.compile of `method` bound to obj, on a copy of its function for obj alone.

    Dynamo keeps compiled graphs on the code object, so instances sharing one would keep
    every engine's graphs (with their frozen weights) alive, and past dynamo's limit of 8
    the fifth engine of a process could not compile at all. Batch and lengths are symbolic;
    the C++ wrapper calls the kernels without Python in between."""
    use_disk_cache()
    f = method
    own = types.FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    bound = types.MethodType(own, obj)
    return torch.compile(bound, dynamic=True, fullgraph=True, options={"cpp_wrapper": True})


def use_disk_cache() -> None:
    """Keep inductor's compiled graphs (its FX graph and AOTAutograd caches, on by default)
    under CHATSMITH_HOME/compile unless TORCHINDUCTOR_CACHE_DIR says otherwise: they outlive
    /tmp, torch's default, so a later start of the same model finds them and only traces.
    Importing inductor already set the variable to torch's default, so that value counts as
    unset; inductor reads it at each compile."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    now = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if now is None or os.path.abspath(now) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(home() / "compile")


def decode_store(cache: SlotKVCache) -> StoreFn | None:
    """The C++ copy that stores a decode step (~0.1 ms less a step than indexing), where loaded."""
    return ops.store_decoded if cache.device.type == "cpu" and build.ready() else None


class CompiledDecode:
    def __init__(self, model: GPT, cache: SlotKVCache, freeze: bool = True) -> None:
        self.model, self.cache = model, cache
        # The weights are constants from here on when frozen, so fused, packed copies stay true.
        # The C++ decode attention where it applies (CPU, a head size it takes); else PyTorch's.
        self.kernel = kernels.prepare(model, "serve", freeze=freeze, kv_dtype=cache.k.dtype)
        self.freeze = freeze
        # A model that no longer changes, on the C++ attention: its steps are built ahead of
        # time and kept on disk (engine/aot.py), a later start loads them in a second.
        self.ahead = freeze and self.kernel and aot.enabled()
        self._aot: Any = None
        self._step = compile_own(CompiledDecode._forward, self)  # freezing: see warm_up
        self._warm = False

    def _forward(
        self, ids: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, L: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = None
        if not self.kernel:  # the plain attention reads L + 1 positions, some masked
            mask = (torch.arange(L + 1, device=pos.device)[None, :] <= pos[:, None])[:, None, None]
        meta = AttnMeta(k, v, pos[:, None], pos, width=L + 1, mask=mask)
        h = self.model.hidden_states(ids[:, None], meta)[:, 0]
        logits = self.model.lm_head(h).float()
        # The greedy tokens come out of the same graph, fused with the logits' last pass:
        # an eager argmax over (32, V) afterwards cost more than a tenth of a millisecond.
        top = logits.argmax(-1)
        return logits, top, torch.stack(meta.new_k), torch.stack(meta.new_v)  # (n_layer, n, G, D)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (n,): the next token of slots 0..n-1 -> logits (n, V); the cache moves on."""
        return self.step(ids)[0]

    def step(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As calling it, but (logits (n, V), their argmax (n,)): the greedy tokens too."""
        if not self._warm:
            self.warm_up()
        lens = self.cache.decode_lengths(ids.size(0))
        pos = torch.tensor(lens, dtype=torch.long, device=self.cache.device)
        # At least 2 cached positions read (the extra ones masked): a length of 1 would
        # make torch compile a third graph specialised to it.
        # Both graphs exist (warm_up), so only the guards that choose between them need
        # checking: a tenth of a millisecond less per step.
        if self._aot is not None:
            logits, top, k, v = self._aot(ids, pos, self.cache.k, self.cache.v)
        else:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                logits, top, k, v = self._step(ids, pos, self.cache.k, self.cache.v, max(2, *lens))
        self.cache.append(k, v, pos, decode_store(self.cache))
        return logits, top

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Load or build the ahead-of-time step, else compile both graphs now (on scratch
        inputs; the cache is not touched)."""
        if self.ahead:
            try:
                self._aot = aot.load_or_build(aot.DecodeStep(self.model), self.cache.k)
                self._warm = True
                return
            except Exception as e:  # export and AOTInductor raise many kinds
                warn(f"the ahead-of-time decode step failed ({type(e).__name__}: {e}); compiling in process")
        dev = self.cache.device
        # Freezing must be on in inductor's global config while it compiles: inductor reads
        # it before a compile's `options` apply, so passing it there is silently ignored
        # (torch 2.13). Frozen, the weights are constants and the matmuls left to oneDNN
        # (float32, or CPUs without AVX512-BF16) use its prepacked kernels: about a fifth
        # off each matmul at 32 rows, a third at one.
        with inductor_config.patch(freezing=self.freeze):
            for n in (1, 2):
                ids = torch.zeros(n, dtype=torch.long, device=dev)
                pos = torch.full((n,), 2, dtype=torch.long, device=dev)
                self._step(ids, pos, self.cache.k, self.cache.v, 3)
        self._warm = True
