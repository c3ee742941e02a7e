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
    _finish(tmp, path, tok, meta, optimizer_state, train_state)

def _finish(
    tmp: Path,
    path: Path,
    tok: BPETokenizer,
    meta: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
    train_state: dict[str, Any] | None,
) -> None:
    """The rest of a checkpoint (tokenizer, meta, optimizer and loop state) into tmp, then tmp
    renamed to path: a crash never leaves a half-written checkpoint as the latest."""
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
    """Model (in eval mode), its tokenizer and meta; every failure is a ChatsmithError.

    A LoRA adapter folder loads as its base with the adapter merged in."""
    path = Path(path)
    if not path.is_dir():
        raise ChatsmithError(f"no checkpoint at {path}")
    if is_adapter(path):
        model, tok, meta = load_adapter_checkpoint(path, device)
        if expect_tokenizer is not None and expect_tokenizer.fingerprint() != tok.fingerprint():
            raise ChatsmithError(f"checkpoint {path} was trained with a different tokenizer")
        return model, tok, meta
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


# ---- LoRA adapters in PEFT's format ------------------------------------------------------------
# An adapter checkpoint is a folder with PEFT's two files (adapter_config.json and
# adapter_model.safetensors, which `peft` loads onto the exported Hugging Face model) plus
# meta.json naming the base checkpoint it was trained on and a fingerprint of that base's
# weights. load_checkpoint on it loads the base and merges the adapter in.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModelForCausalLM -> LoraModel -> the HF model


def peft_name(name: str) -> str:
    """`layers.0.mlp.up_proj.lora_A.weight` -> PEFT's key on the exported model (whose names are
    ours with a `model.` prefix, as interop.hf_config.to_hf_name says)."""
    return PEFT_PREFIX + ("" if name.startswith("lm_head.") else "model.") + name


def from_peft_name(key: str) -> str:
    return key.removeprefix(PEFT_PREFIX).removeprefix("model.")


def is_adapter(path: Path) -> bool:
    """A LoRA adapter folder (and no full weights beside it)."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "model.safetensors").is_file()


def weights_fingerprint(model: GPT) -> str:
    """A short hash of the weights (shape and a strided sample of each tensor): which base an
    adapter belongs to, cheap enough to check at every load of a 100M-parameter model."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1).float().cpu()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(flat[:: max(1, flat.numel() // 4096)].numpy().tobytes())
    return h.hexdigest()[:16]


def save_adapter(
    path: Path,
    tensors: dict[str, torch.Tensor],
    peft_config: dict[str, Any],
    tok: BPETokenizer,
    meta: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write an adapter checkpoint atomically; `tensors` under chatsmith names (`...lora_A.weight`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {peft_name(k): v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=2))
    _finish(tmp, path, tok, meta, optimizer_state, train_state)


def read_adapter(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT's config and the adapter's tensors under chatsmith names; refuses what merging cannot do."""
    path = Path(path)
    try:
        conf = json.loads((path / ADAPTER_CONFIG).read_text())
        raw = load_file(str(path / ADAPTER_WEIGHTS))
    except (OSError, json.JSONDecodeError, SafetensorError, ValueError) as e:
        raise ChatsmithError(f"LoRA adapter {path} is unreadable ({e})") from None
    if conf.get("peft_type", "LORA") != "LORA":
        raise ChatsmithError(f"adapter {path} is {conf.get('peft_type')}, not LoRA")
    unsupported = [k for k in ("use_dora", "modules_to_save", "fan_in_fan_out") if conf.get(k)]
    if conf.get("bias", "none") != "none":
        unsupported.append(f"bias={conf['bias']}")
    if unsupported:
        raise ChatsmithError(f"adapter {path} uses {', '.join(unsupported)}, which chatsmith does not merge")
    return conf, {from_peft_name(k): v for k, v in raw.items()}


def merge_adapter(model: GPT, path: Path) -> None:
    """W += (alpha / r) B A for every adapted Linear (alpha / sqrt(r) with rsLoRA), in float32.

    Names or shapes that do not fit the model mean the adapter is for another base: that is
    an error before any weight changes.
    """
    conf, tensors = read_adapter(path)
    modules = dict(model.named_modules())
    pairs = []
    for a_name in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        name = a_name.removesuffix(".lora_A.weight")
        A, B = tensors[a_name], tensors.get(f"{name}.lora_B.weight")
        m = modules.get(name)
        if B is None or not isinstance(m, torch.nn.Linear) or (B.shape[0], A.shape[1]) != m.weight.shape:
            raise ChatsmithError(
                f"LoRA adapter {path} is for another base: its {name} "
                f"({tuple(B.shape[:1]) + tuple(A.shape[1:]) if B is not None else 'no lora_B'}) has no "
                f"matching Linear layer in this model"
            )
        r = A.shape[0]
        alpha = float(conf.get("alpha_pattern", {}).get(name.split(".")[-1], conf.get("lora_alpha", r)))
        scale = alpha / (r**0.5 if conf.get("use_rslora") else r)
        pairs.append((m, A, B, scale))
    rows = _token_rows(model, conf, tensors, path)
    if not pairs and rows is None:
        raise ChatsmithError(f"LoRA adapter {path} holds no lora_A/lora_B tensors")
    with torch.no_grad():
        for m, A, B, scale in pairs:
            delta = scale * (B.float() @ A.float())
            m.weight.copy_((m.weight.float() + delta.to(m.weight.device)).to(m.weight.dtype))
        if rows is not None:  # PEFT's trainable tokens replace whole rows (tied heads share them)
            ids, values = rows
            w = model.embed_tokens.weight
            w[ids.to(w.device)] = values.to(w.device, w.dtype)


def _token_rows(
    model: GPT, conf: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The embedding rows an adapter replaces (trainable_token_indices), checked against the model."""
    values = tensors.get("embed_tokens.token_adapter.trainable_tokens_delta")
    if values is None:
        return None
    spec = conf.get("trainable_token_indices") or {}
    ids = torch.tensor(spec.get("embed_tokens", []) if isinstance(spec, dict) else spec, dtype=torch.long)
    w = model.embed_tokens.weight
    if values.shape != (len(ids), w.shape[1]) or (len(ids) and int(ids.max()) >= w.shape[0]):
        raise ChatsmithError(f"LoRA adapter {path} is for another base: its token rows do not fit this model")
    return ids, values


def load_adapter_checkpoint(
    path: Path, device: torch.device | str = "cpu", base: Path | None = None
) -> tuple[GPT, BPETokenizer, dict[str, Any]]:
    """The base (meta.json's, or `base`) with the adapter merged in; an adapter trained on
    other weights than the base's is an error."""
    path = Path(path)
    meta = read_meta(path) if (path / "meta.json").is_file() else {}
    if base is None:
        conf = json.loads((path / ADAPTER_CONFIG).read_text())
        where = meta.get("base") or conf.get("base_model_name_or_path")
        if not where:
            raise ChatsmithError(f"LoRA adapter {path} does not name its base; pass the base model")
        base = Path(where) if Path(where).is_absolute() else (path / where).resolve()
    model, tok, _ = load_checkpoint(base, device)
    want = meta.get("base_fingerprint")
    if want and want != (have := weights_fingerprint(model)):
        raise ChatsmithError(
            f"LoRA adapter {path} is for another base: it was trained on weights {want}, "
            f"{base} holds {have}"
        )
    if meta.get("tokenizer") not in (None, tok.fingerprint()):
        raise ChatsmithError(f"LoRA adapter {path} is for another base: its tokenizer differs from {base}'s")
    merge_adapter(model, path)
    return model, tok, {**meta, "base": str(base)}
