"""Where artifacts live: $CHATSMITH_HOME (default ~/.cache/chatsmith), one folder per run."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("CHATSMITH_HOME", Path.home() / ".cache" / "chatsmith")).expanduser()


def run_dir(name: str) -> Path:
    """The folder of one run: tokenizer, data, checkpoints per stage, report."""
    return home() / "runs" / name


def resolve_model(path_or_run: str) -> Path:
    """Accept a checkpoint folder, or a run name/folder (then its latest chat stage)."""
    p = Path(path_or_run).expanduser()
    if not p.exists() and os.sep not in path_or_run:
        p = run_dir(path_or_run)
    for stage in ("rl", "dpo", "sft", "base"):
        if (p / stage / "model.safetensors").is_file() or (p / stage / "adapter_config.json").is_file():
            return p / stage  # full weights, or a LoRA adapter on its base
    return p
