"""The engine's steps built ahead of time (engine/aot.py): a later start loads them and
traces nothing, gives the same numbers, and a package never serves a model it was not built for."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import caches_with_prompts, needs_kernels, peaky_engine_model
from torch._dynamo.utils import counters

from chatsmith.engine import aot
from chatsmith.engine.decode import CompiledDecode
from chatsmith.engine.prefill import CompiledPrefill
from chatsmith.model.build import build_model

pytestmark = needs_kernels


def frozen_decoder(model, prompts=(6, 9)) -> CompiledDecode:
    cache, _ = caches_with_prompts(model, list(prompts))
    dec = CompiledDecode(model, cache, freeze=True)
    if not dec.ahead:
        pytest.skip("no ahead-of-time step here (no C++ attention, or CHATSMITH_AOT=0)")
    return dec


@torch.inference_mode()
def test_a_second_start_loads_the_packages_and_traces_nothing(tiny_tok) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=31)
    first = frozen_decoder(model)
    want = first(torch.tensor([5, 7]))
    prefill = CompiledPrefill(model, first.cache, ahead=True)
    prefill.warm_up()  # builds its package too, if this machine has none yet
    files = {p: p.stat().st_mtime_ns for p in aot.folder().glob("*.pt2")}
    traced = counters["stats"]["unique_graphs"]
    # A new process in all but name: a fresh engine on a copy of the model.
    again = frozen_decoder(copy.deepcopy(model))
    assert torch.equal(again(torch.tensor([5, 7])), want)
    CompiledPrefill(again.model, again.cache, ahead=True).warm_up()
    assert counters["stats"]["unique_graphs"] == traced  # nothing traced
    assert {p: p.stat().st_mtime_ns for p in aot.folder().glob("*.pt2")} == files  # nothing rebuilt


def test_the_key_follows_the_code_not_the_weights(tiny_tok) -> None:
    a = peaky_engine_model(tiny_tok.vocab_size, seed=1)
    b = peaky_engine_model(tiny_tok.vocab_size, seed=2)  # same shapes, other weights
    deeper = build_model(dataclasses.replace(a.cfg, n_layer=a.cfg.n_layer + 1), seed=1)
    key = aot.package_key(aot.DecodeStep(a), torch.bfloat16)
    assert aot.package_key(aot.DecodeStep(b), torch.bfloat16) == key
    assert aot.package_key(aot.DecodeStep(a), torch.float32) != key
    assert aot.package_key(aot.PrefillStep(a), torch.bfloat16) != key
    assert aot.package_key(aot.DecodeStep(deeper), torch.bfloat16) != key


@torch.inference_mode()
def test_a_damaged_package_is_built_again(tiny_tok) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size, seed=31)
    dec = frozen_decoder(model)
    want = dec(torch.tensor([5, 7]))
    path = aot.folder() / f"DecodeStep-{aot.package_key(aot.DecodeStep(model), dec.cache.k.dtype)}.pt2"
    path.write_bytes(b"not a package")
    again = frozen_decoder(copy.deepcopy(model))
    assert torch.equal(again(torch.tensor([5, 7])), want)
    assert path.stat().st_size > 1000
