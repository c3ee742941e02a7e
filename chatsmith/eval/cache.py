"""Results cached per checkpoint and task: a finished evaluation is never run twice.

The key hashes the checkpoint's weights, the task file's bytes and every setting that can
change a number; any change to one of them is a new key. Files are written to a temporary
name and renamed, so a crash leaves no half-written result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Bump when a change to the evaluation code changes results for the same inputs.
CACHE_VERSION = 1


WEIGHTS = "model.safetensors"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # PEFT's, see checkpoint.py


def has_weights(path: Path) -> bool:
    """A checkpoint to evaluate: full weights, or a LoRA adapter (evaluated merged into its base)."""
    p = Path(path)
    return (p / WEIGHTS).is_file() or all((p / f).is_file() for f in ADAPTER_FILES)


def checkpoint_key(path: Path) -> str:
    """sha256 of a checkpoint's weights (the model's identity, whatever its folder).

    An adapter is its own files plus its base's fingerprint (meta.json, checked whenever it
    loads): the same adapter on other base weights is another model."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p / WEIGHTS] if (p / WEIGHTS).is_file() else [p / f for f in ADAPTER_FILES]
    for name in files:
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    if files[0].name != WEIGHTS and (p / "meta.json").is_file():
        h.update(str(json.loads((p / "meta.json").read_text()).get("base_fingerprint")).encode())
    return h.hexdigest()


def cache_key(model_key: str, task_name: str, task_digest: str, settings: dict[str, Any]) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, "model": model_key, "task": task_name, "file": task_digest, **settings},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    p = Path(cache_dir) / f"{key}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def store(cache_dir: Path | None, key: str, result: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{key}.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(result, ensure_ascii=False))
    os.replace(tmp, d / f"{key}.json")
