"""The engine's compiled steps built ahead of time (AOTInductor) and kept on disk, so that a
later start loads them in about a second instead of tracing the model again.

torch.compile (engine/decode.py, engine/prefill.py) traces the model in every new process:
its on-disk cache keeps only inductor's generated code, and for SmolLM2-135M's 30 layers
Dynamo's and AOTAutograd's tracing of the decode and prefill graphs took 91 of a later
start's 105 s. Here each step is a module (DecodeStep, PrefillStep) exported once with the
batch and the lengths symbolic (torch.export), compiled by AOTInductor into a package
beside inductor's cache (`folder`), and loaded by later processes. One graph takes every
batch size, one row included, so a sequence is computed by the same code alone or among
others.

A package holds no weights: its constants are pointed at the model's own tensors
(`load_constants(..., user_managed=True)`), so the decode and the prefill graph share the
one copy the model has, and the file is a few MB. Its name is a hash of what the
generated code depends on: torch's version, the kernels' build and sources, the model's
config, modules and the names, shapes and dtypes of its tensors, and the cache's dtype;
never the weights' values. Used by frozen engines on CPUs where the C++ attention runs
(engine/decode.py); CHATSMITH_AOT=0 keeps torch.compile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.export import Dim

from chatsmith.common.log import info, warn
from chatsmith.common.paths import home
from chatsmith.kernels.cpu import build
from chatsmith.model.attention import AttnMeta
from chatsmith.model.gpt import GPT


def enabled() -> bool:
    """Whether ahead-of-time steps are wanted (CHATSMITH_AOT=0 turns them off)."""
    return os.environ.get("CHATSMITH_AOT", "1") != "0"


class DecodeStep(nn.Module):
    """One new token for each of n sequences, reading (never writing) the cache: the logits
    (n, V), their argmax, and the step's keys and values (n_layer, n, G, D)."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
        meta = AttnMeta(k, v, pos[:, None], pos)  # the C++ attention reads positions < pos
        h = self.model.hidden_states(ids[:, None], meta)[:, 0]
        logits = self.model.lm_head(h).float()
        return logits, logits.argmax(-1), torch.stack(meta.new_k), torch.stack(meta.new_v)


class PrefillStep(nn.Module):
    """Whole prompts packed in one row (engine/prefill.py): the logits of each one's last
    token, their argmax, and the prompts' keys and values."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids, pos, k, v, slots, past, lens) -> Any:
        meta = AttnMeta(k, v, pos, past, slots=slots, lens=lens)
        h = self.model.hidden_states(ids[None], meta)[0]
        logits = self.model.lm_head(h[lens.cumsum(0) - 1]).float()
        return logits, logits.argmax(-1), torch.stack(meta.new_k), torch.stack(meta.new_v)


def _examples(step: nn.Module, cache: torch.Tensor) -> tuple[tuple, tuple]:
    """Scratch inputs for exporting, and their symbolic sizes. Every symbolic size gets its
    own example value above 1 (torch specialises 0 and 1, and equal examples would be
    taken for one size); the cache is a small tensor of the real one's dtype."""
    L, _, _, G, D = cache.shape
    slots, max_len = Dim("slots", min=1), Dim("max_len", min=8)
    kv = torch.zeros(L, 7, 67, G, D, dtype=cache.dtype)
    kv_dims = {1: slots, 2: max_len}
    if isinstance(step, DecodeStep):
        n = Dim("n", min=1, max=4096)
        ids, pos = torch.zeros(5, dtype=torch.long), torch.full((5,), 3, dtype=torch.long)
        return (ids, pos, kv, kv.clone()), ({0: n}, {0: n}, kv_dims, kv_dims)
    T, S = Dim("tokens", min=2), Dim("prompts", min=1, max=4096)
    lens = torch.tensor([5, 6])
    pos = torch.cat([torch.arange(5), torch.arange(6)])
    ids, past = torch.zeros(11, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    args = (ids, pos, kv, kv.clone(), torch.tensor([0, 1]), past, lens)
    return args, ({0: T}, {0: T}, kv_dims, kv_dims, {0: S}, {0: S}, {0: S})


def package_key(step: nn.Module, cache_dtype: torch.dtype) -> str:
    """A hash of everything the step's generated code depends on (not the weights' values)."""
    h = hashlib.sha256()
    model: GPT = step.model  # type: ignore[assignment]
    parts = [type(step).__name__, torch.__version__, build.extension_name(), str(cache_dtype)]
    parts.append(json.dumps(dataclasses.asdict(model.cfg), sort_keys=True, default=str))
    for name, m in step.named_modules():
        parts.append(f"{name}:{type(m).__qualname__}:{getattr(m, 'cpp', '')}:{getattr(m, 'rows', '')}")
    for name, t in _tensors(step).items():
        parts.append(f"{name}:{tuple(t.shape)}:{t.dtype}:{t.stride()}")
    for src in build.SOURCES:
        h.update(src.read_bytes())
    h.update("\n".join(parts).encode())
    return h.hexdigest()[:24]


def _build(step: nn.Module, cache: torch.Tensor, path: Path) -> None:
    """Export step and compile it into a package at path (written whole or not at all)."""
    args, dims = _examples(step, cache)
    t0 = time.perf_counter()
    with torch.no_grad():  # as the engine calls it: in inference mode, or not
        ep = torch.export.export(step, args, dynamic_shapes=dims, strict=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        torch._inductor.aoti_compile_and_package(
            ep, package_path=tmp, inductor_configs={"aot_inductor.package_constants_in_so": False}
        )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    info(f"compiled the {type(step).__name__} ahead of time in {time.perf_counter() - t0:.0f} s: {path}")


def load_or_build(step: nn.Module, cache: torch.Tensor) -> Any:
    """The step's package, built first if there is none for its key, with its constants
    pointed at the model's own tensors -> a callable taking the step's inputs."""
    from torch._inductor.package import load_package

    path = folder() / f"{type(step).__name__}-{package_key(step, cache.dtype)}.pt2"
    if not path.is_file():
        _build(step, cache, path)
    try:
        compiled = load_package(str(path))
    except Exception as e:  # a damaged file: build it again
        warn(f"could not load {path} ({type(e).__name__}: {e}); compiling it again")
        path.unlink(missing_ok=True)
        _build(step, cache, path)
        compiled = load_package(str(path))
    tensors = _tensors(step)
    wanted = {f: tensors[f] for f in compiled.get_constant_fqns()}
    compiled.load_constants(wanted, check_full_update=True, user_managed=True)
    return compiled


def folder() -> Path:
    """Where packages are kept: beside inductor's own cache (CHATSMITH_HOME/compile, unless
    TORCHINDUCTOR_CACHE_DIR names another place), so both are kept or cleared together."""
    base = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return (Path(base) if base else home() / "compile") / "chatsmith_aot"


def _tensors(step: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, a tied weight under each of its names."""
    out = dict(step.named_parameters(remove_duplicate=False))
    out.update(step.named_buffers(remove_duplicate=False))
    return out
