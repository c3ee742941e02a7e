"""Checkpoints round-trip exactly, are written atomically and refuse damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chatsmith.checkpoint import load_checkpoint, save_checkpoint
from chatsmith.common.errors import ChatsmithError
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig


def make(tok, tied: bool = False):
    cfg = GPTConfig(
        vocab_size=tok.vocab_size,
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_kv_head=1,
        head_dim=16,
        intermediate_size=64,
        seq_len=32,
        tie_embeddings=tied,
    )
    model = build_model(cfg, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_gives_identical_logits(tiny_tok, tmp_path: Path, tied: bool) -> None:
    model = make(tiny_tok, tied)
    save_checkpoint(tmp_path / "c", model, tiny_tok, {"stage": "base", "step": 3})
    loaded, tok, meta = load_checkpoint(tmp_path / "c")
    x = torch.randint(0, tiny_tok.vocab_size, (2, 16))
    assert torch.equal(model(x), loaded(x))
    assert meta["step"] == 3 and tok.fingerprint() == tiny_tok.fingerprint()
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == tied


def test_overwrite_is_atomic_and_leaves_no_temporaries(tiny_tok, tmp_path: Path) -> None:
    model = make(tiny_tok)
    save_checkpoint(tmp_path / "c", model, tiny_tok, {"step": 1})
    save_checkpoint(tmp_path / "c", model, tiny_tok, {"step": 2})
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_crash_while_writing_keeps_the_previous_checkpoint(tiny_tok, tmp_path: Path, monkeypatch) -> None:
    model = make(tiny_tok)
    save_checkpoint(tmp_path / "c", model, tiny_tok, {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("chatsmith.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "c", model, tiny_tok, {"step": 2})
    _, _, meta = load_checkpoint(tmp_path / "c")
    assert meta["step"] == 1


@pytest.mark.parametrize("damage", ["truncate", "delete", "config", "tokenizer_swap"])
def test_damaged_checkpoints_are_clear_errors(tiny_tok, tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path / "c", make(tiny_tok), tiny_tok, {"step": 1})
    c = tmp_path / "c"
    if damage == "truncate":
        data = (c / "model.safetensors").read_bytes()
        (c / "model.safetensors").write_bytes(data[:100])
    elif damage == "delete":
        (c / "meta.json").unlink()
    elif damage == "config":
        (c / "config.json").write_text("{not json")
    else:
        meta = json.loads((c / "meta.json").read_text())
        meta["tokenizer"] = "0" * 16
        (c / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ChatsmithError):
        load_checkpoint(c)
