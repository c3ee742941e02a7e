"""`chatsmith eval` on LoRA stages: an adapter folder (PEFT's files, no model.safetensors) is
a stage of its run and a checkpoint of its own, evaluated as its base with the adapter merged
in, and cached under a key that changes with the adapter's weights and with its base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_lora import adapted, make_base, save_adapter_dir

from chatsmith.checkpoint import load_checkpoint
from chatsmith.cli import main
from chatsmith.eval.cache import checkpoint_key
from chatsmith.eval.runner import evaluate_model, evaluate_stages
from chatsmith.tokenizer.bpe import BPETokenizer

TEXT = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。\n" * 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tiny_tok: BPETokenizer, tmp_path_factory) -> Path:
    """A run folder whose base is a full checkpoint and whose sft stage is an adapter on it."""
    d = tmp_path_factory.mktemp("lora_eval_run")
    make_base(tiny_tok, d / "base", seed=3)
    save_adapter_dir(adapted(tiny_tok, d / "base"), tiny_tok, d / "sft")
    (d / "held.txt").write_text(TEXT)
    return d


def bpb(res: dict) -> float:
    return res["bpb"]["metrics"]["bpb"]


def test_eval_finds_the_adapter_stage_and_scores_the_merged_model(run: Path) -> None:
    spec = [f"bpb:{run / 'held.txt'}"]
    out = evaluate_stages(run, tasks=spec, use_cache=False)
    assert set(out) == {"base", "sft"}, out
    merged, tok, _ = load_checkpoint(run / "sft")
    assert bpb(out["sft"]["tasks"]) == pytest.approx(bpb(evaluate_model(merged, tok, spec)), abs=1e-9)
    assert bpb(out["sft"]["tasks"]) != pytest.approx(bpb(out["base"]["tasks"]), abs=1e-6)


def test_an_adapter_has_its_own_cache_key(run: Path, tiny_tok: BPETokenizer, tmp_path: Path) -> None:
    key = checkpoint_key(run / "sft")
    assert key != checkpoint_key(run / "base")
    other = save_adapter_dir(adapted(tiny_tok, run / "base", rank=2), tiny_tok, tmp_path / "sft2")
    assert checkpoint_key(other) != key  # other adapter weights: another model
    moved = tmp_path / "moved"
    (run / "sft").rename(moved)
    try:
        assert checkpoint_key(moved) == key  # the weights name the model, not the folder
    finally:
        moved.rename(run / "sft")


def test_eval_cli_takes_an_adapter_folder_as_one_checkpoint(run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CHATSMITH_HOME", str(tmp_path))
    out, spec = tmp_path / "res.json", f"bpb:{run / 'held.txt'}"
    assert main(["eval", "--model", str(run / "sft"), "--tasks", spec, "--out", str(out)]) == 0
    merged, tok, _ = load_checkpoint(run / "sft")
    base, _, _ = load_checkpoint(run / "base")
    got = bpb(json.loads(out.read_text()))
    # The CLI sets its own thread count, so float sums may differ in the last digits; the base
    # scores about 0.02 apart, so this still tells the merged model from the base.
    assert got == pytest.approx(bpb(evaluate_model(merged, tok, [spec])), abs=1e-4)
    assert got != pytest.approx(bpb(evaluate_model(base, tok, [spec])), abs=1e-3)
