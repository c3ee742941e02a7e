"""LoRA adapters in PEFT's format, at the borders: `chatsmith export --merge-lora`.

chatsmith's LoRA stages write adapters that `peft` loads onto the exported Hugging Face model
(chatsmith.checkpoint.save_adapter: PEFT's file names, keys and adapter_config.json). Here an
adapter leaves merged into its base, either a chatsmith adapter checkpoint (the chain of
bases it names is merged in order) or any PEFT LoRA adapter given with the base it was
trained on, e.g. one trained with TRL and PEFT on chatsmith's exported model:

    chatsmith export --model <run>/sft --merge-lora --to hf OUT   (or --to gguf FILE.gguf)
    chatsmith export --model BASE --merge-lora --adapter ADAPTER_DIR --to hf OUT

An adapter whose tensors or recorded base do not fit the base is one error, and nothing is
written.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from chatsmith.checkpoint import (
    ADAPTER_CONFIG,
    is_adapter,
    load_adapter_checkpoint,
    load_checkpoint,
    read_meta,
)
from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.interop.gguf_export import export_gguf
from chatsmith.interop.hf_export import DTYPES, FORMATS, export_hf, stored_dtype
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer


def root_base(path: Path) -> Path:
    """The full checkpoint under a chain of adapters (each naming its base in meta.json)."""
    seen = set()
    path = Path(path)
    while is_adapter(path):
        if path in seen:
            raise ChatsmithError(f"LoRA adapter {path} names itself as a base (a cycle)")
        seen.add(path)
        base = read_meta(path).get("base")
        if not base:
            raise ChatsmithError(f"LoRA adapter {path} does not name its base")
        path = Path(base)
    return path


def merged_model(model_path: Path, adapter: str) -> tuple[GPT, BPETokenizer, torch.dtype]:
    """The model with its adapter merged in, and the dtype its base was stored in.

    adapter "": model_path is a chatsmith adapter checkpoint; else a PEFT adapter folder for model_path.
    """
    model_path = Path(model_path)
    if not adapter:
        if not is_adapter(model_path):
            raise ChatsmithError(
                f"{model_path} is not a LoRA adapter; --merge-lora needs one, or name the adapter: "
                "--merge-lora --adapter ADAPTER_DIR"
            )
        model, tok, _ = load_checkpoint(model_path)
    else:
        if not (Path(adapter) / ADAPTER_CONFIG).is_file():
            raise ChatsmithError(f"{adapter} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
        model, tok, _ = load_adapter_checkpoint(Path(adapter), base=model_path)
    return model, tok, stored_dtype(root_base(model_path))


def export_merged(model_path: str, adapter: str, to: str, out_dir: str, gguf_type: str = "f16") -> Path:
    """`chatsmith export --model PATH --merge-lora [--adapter DIR] --to hf OUT` (or `--to gguf FILE`)."""
    if to not in FORMATS:
        raise ChatsmithError(f"unknown export format {to!r}; supported: {', '.join(FORMATS)}")
    out = Path(out_dir)
    if to == "gguf":
        if out.exists():
            raise ChatsmithError(f"{out} exists; remove it or choose another name")
        model, tok, _ = merged_model(Path(model_path), adapter)
        out = export_gguf(model, tok, out, gguf_type, name=out.stem)
        log.info(f"exported {model_path} with its LoRA adapter merged to {out} ({gguf_type})")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before the (slow) merge
        raise ChatsmithError(f"{out} exists and is not an empty folder; remove it or choose another")
    model, tok, dtype = merged_model(Path(model_path), adapter)
    out = export_hf(model, tok, out, dtype=dtype)
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    log.info(f"exported {model_path} with its LoRA adapter merged to {out} ({arch}, {DTYPES[dtype]})")
    return out
