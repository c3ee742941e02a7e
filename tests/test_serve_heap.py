"""A loaded server keeps its start-up heap out of the garbage collector's full passes."""

from __future__ import annotations

import gc

from conftest import peaky_engine_model

from chatsmith.checkpoint import save_checkpoint
from chatsmith.serve.backend import Backend


def test_loading_freezes_the_start_up_heap(tiny_tok, tmp_path) -> None:
    """Under load a full collection walked the whole heap (model, torch, the app) about every
    10 s and stalled every stream for 0.3 s; after loading, what start-up made is frozen
    and a full collection sees only what came later."""
    save_checkpoint(tmp_path / "m", peaky_engine_model(tiny_tok.vocab_size, seed=0), tiny_tok, {"step": 1})
    gc.unfreeze()
    b = Backend("m", max_batch=2)
    try:
        b.load_in_background(str(tmp_path / "m"), "cpu").join()
        assert b.error is None and b.wait_ready(5)
        frozen = gc.get_freeze_count()
        engine = b.engine
        assert frozen > 10_000, frozen  # torch and the app's modules alone are far more
        tracked = {id(o) for o in gc.get_objects()}  # what a full collection walks
        assert id(engine) not in tracked and id(engine.sched) not in tracked
    finally:
        b.shutdown(drain=False, timeout=5)
        gc.unfreeze()  # give the test process's heap back to the collector
