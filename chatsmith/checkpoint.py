"""Checkpoints: model.safetensors + config.json + tokenizer.json + meta.json (+ optimizer).

A checkpoint is written into a temporary folder and renamed into place, so a crash
never leaves a half-written checkpoint where the latest one should be.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from chatsmith.common.errors import ChatsmithError
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer

FILES = ("model.safetensors", "config.json", "tokenizer.json", "meta.json")


def save_checkpoint(
    path: Path,
    model: GPT,
    tok: BPETokenizer,
    meta: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically. `state` replaces model.state_dict() (a state gathered from
    shards); `optimizer_state` and `train_state` (RNG, data position) make it resumable."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Tied weights are one tensor: save it once, under the embedding's name.
    state = {k: v.detach().contiguous().cpu() for k, v in (state or model.state_dict()).items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps({"model": dataclasses.asdict(model.cfg)}, indent=1))
    tok.save(tmp / "tokenizer.json")
    (tmp / "meta.json").write_text(json.dumps({**meta, "tokenizer": tok.fingerprint()}, indent=1))
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / "optimizer.pt")
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(path: Path) -> dict[str, Any]:
    p = Path(path) / "meta.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ChatsmithError(f"checkpoint {path}: cannot read meta.json ({e})") from None


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", expect_tokenizer: BPETokenizer | None = None
) -> tuple[GPT, BPETokenizer, dict[str, Any]]:
    """Model (in eval mode), its tokenizer and meta; every failure is a ChatsmithError."""
    path = Path(path)
    if not path.is_dir():
        raise ChatsmithError(f"no checkpoint at {path}")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise ChatsmithError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        cfg = GPTConfig(**json.loads((path / "config.json").read_text())["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ChatsmithError(
            f"checkpoint {path}: config.json is not a chatsmith model config ({e})"
        ) from None
    tok = BPETokenizer.load(path / "tokenizer.json")
    meta = read_meta(path)
    if meta.get("tokenizer") not in (None, tok.fingerprint()):
        raise ChatsmithError(
            f"checkpoint {path}: its tokenizer.json ({tok.fingerprint()}) is not the tokenizer the model "
            f"was trained with ({meta['tokenizer']})"
        )
    if expect_tokenizer is not None and expect_tokenizer.fingerprint() != tok.fingerprint():
        raise ChatsmithError(
            f"checkpoint {path} was trained with a different tokenizer "
            f"({tok.fingerprint()} != {expect_tokenizer.fingerprint()})"
        )
    if tok.vocab_size > cfg.vocab_size:
        raise ChatsmithError(
            f"checkpoint {path}: tokenizer has {tok.vocab_size} tokens, model only {cfg.vocab_size}"
        )
    try:
        state = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise ChatsmithError(f"checkpoint {path}: model.safetensors is corrupted ({e})") from None
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device=device)
    if cfg.tie_embeddings:
        state.setdefault("lm_head.weight", state.get("embed_tokens.weight"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise ChatsmithError(f"checkpoint {path}: weights do not match its config ({first})") from None
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.init_rope()
    model.eval()
    return model, tok, meta


def load_optimizer_state(path: Path) -> dict[str, Any] | None:
    p = Path(path) / "optimizer.pt"
    if not p.is_file():
        return None
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types on a damaged file
        raise ChatsmithError(f"checkpoint {path}: optimizer.pt is corrupted ({e})") from None


def load_train_state(path: Path) -> dict[str, Any]:
    """RNG states and the like that a resumable checkpoint saved next to the optimizer."""
    p = Path(path) / "train_state.pt"
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # missing or damaged
        raise ChatsmithError(
            f"checkpoint {path}: cannot read train_state.pt ({e}); it is not resumable"
        ) from None


def load_weights(path: Path, model: GPT) -> None:
    """Load a checkpoint's weights into an existing model of the same config (for resuming)."""
    try:
        state = load_file(str(Path(path) / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise ChatsmithError(f"checkpoint {path}: model.safetensors is unreadable ({e})") from None
    if model.cfg.tie_embeddings:
        state.setdefault("lm_head.weight", state.get("embed_tokens.weight"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise ChatsmithError(f"checkpoint {path}: weights do not match this model ({first})") from None
    if model.cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight


def resume_point(path: Path) -> dict[str, Any] | None:
    """The meta of a checkpoint a stage can continue from, or None when there is nothing to resume.

    A checkpoint is resumable when it holds the optimizer and train state (mid-run checkpoints);
    a finished stage's final checkpoint has `step == total_steps`.
    """
    path = Path(path)
    if not (path / "meta.json").is_file():
        return None
    meta = read_meta(path)
    done = meta.get("step", 0) >= meta.get("total_steps", 0)
    if not done and not ((path / "optimizer.pt").is_file() and (path / "train_state.pt").is_file()):
        return None
    return meta
