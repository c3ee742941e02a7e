"""Import a GGUF file (llama.cpp, Ollama, LM Studio) of the llama, qwen2 or qwen3 family.

Reads the file with the `gguf` package, dequantizes every tensor to float32 (F32, F16, BF16,
Q8_0, Q4_0/1, Q5_0/1 and the K-quants), undoes llama's Q/K row order, rebuilds tokenizer.json
from tokenizer.ggml.* and keeps the model's chat template, special tokens and sampling
defaults as its tokenizer_config.json / generation_config.json. Writes a chatsmith checkpoint;
anything chatsmith's network or tokenizer cannot reproduce is refused with the reason, and
nothing is written then.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatsmith.checkpoint import save_checkpoint
from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.interop.gguf_names import (
    ARCHS,
    IGNORED,
    from_gguf_name,
    heads_of,
    llama_unpermute,
    needs_permute,
)
from chatsmith.interop.gguf_tokenizer import configs_from_gguf, tokenizer_from_gguf
from chatsmith.interop.hf_import import add_missing_tokens, add_token_rows, build, chatsmith_state
from chatsmith.model.gpt import GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer

_Q = "Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K"
SUPPORTED = {"F32", "F16", "BF16", *_Q.split()}


def read_gguf(path: Path) -> Any:
    """A GGUFReader, or one clear error for a missing, truncated or foreign file."""
    import gguf

    if not path.is_file():
        raise ChatsmithError(f"no GGUF file at {path}")
    try:
        reader = gguf.GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # the reader raises ValueError, struct and numpy errors alike
        raise ChatsmithError(f"{path} is not a complete GGUF file ({e})") from None
    if end > path.stat().st_size:
        size = path.stat().st_size
        raise ChatsmithError(f"{path} is truncated: its tensors need {end} bytes, it has {size}")
    return reader


def metadata(reader: Any) -> dict[str, Any]:
    out = {}
    for name, field in reader.fields.items():
        try:
            out[name] = field.contents()
        except Exception:  # a value this gguf version cannot decode is not one chatsmith reads
            continue
    return out


def _get(meta: dict[str, Any], arch: str, key: str, default: Any = None) -> Any:
    v = meta.get(f"{arch}.{key}", default)
    if isinstance(v, list):  # per-layer values (e.g. head_count_kv) must all agree
        if len(set(v)) != 1:
            raise ChatsmithError(f"{arch}.{key} differs between layers ({sorted(set(v))}): not supported")
        v = v[0]
    if v is None:
        raise ChatsmithError(f"the GGUF file lacks {arch}.{key}")
    return v


def _f32(v: float) -> float:
    """A float32 field as the decimal it was written from (1e-06, not 9.99999997e-07)."""
    return float(str(np.float32(v)))


def gguf_config(meta: dict[str, Any], names: set[str], rows: int) -> tuple[GPTConfig, str]:
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        raise ChatsmithError(
            f"GGUF architecture {arch!r} is not supported; chatsmith imports {', '.join(ARCHS)}"
        )
    qk_norm, _ = ARCHS[arch]
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None) and float(meta.get(f"{arch}.rope.scaling.factor", 1.0)) != 1.0:
        raise ChatsmithError(f"rope scaling {scaling!r} is not implemented (only plain RoPE is)")
    if meta.get(f"{arch}.expert_count"):
        raise ChatsmithError("mixture-of-experts models are not supported")
    n_embd, n_head = int(_get(meta, arch, "embedding_length")), int(_get(meta, arch, "attention.head_count"))
    head_dim = int(_get(meta, arch, "attention.key_length", n_embd // n_head))
    if int(_get(meta, arch, "attention.value_length", head_dim)) != head_dim:
        raise ChatsmithError("attention.value_length differs from key_length: not supported")
    if int(_get(meta, arch, "rope.dimension_count", head_dim)) != head_dim:
        raise ChatsmithError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported")
    cfg = GPTConfig(
        vocab_size=rows,
        n_layer=int(_get(meta, arch, "block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=int(_get(meta, arch, "attention.head_count_kv", n_head)),
        head_dim=head_dim,
        intermediate_size=int(_get(meta, arch, "feed_forward_length")),
        seq_len=int(_get(meta, arch, "context_length")),
        rope_theta=_f32(_get(meta, arch, "rope.freq_base", 10000.0)),
        rms_eps=_f32(_get(meta, arch, "attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in names,
        qk_norm=qk_norm,
        qkv_bias="blk.0.attn_q.bias" in names,
    )
    if n_head % cfg.n_kv_head or head_dim % 2:
        raise ChatsmithError(f"heads {n_head}/{cfg.n_kv_head} with head_dim {head_dim} are not supported")
    return cfg, arch


def dequantize(t: Any) -> torch.Tensor:
    """One tensor as float32 in PyTorch's (rows, cols) order."""
    from gguf import quants

    kind = t.tensor_type.name
    if kind not in SUPPORTED:
        raise ChatsmithError(
            f"tensor {t.name} is {kind}, which chatsmith cannot dequantize; "
            f"supported: {', '.join(sorted(SUPPORTED))}"
        )
    shape = [int(d) for d in reversed(t.shape.tolist())]  # GGUF lists the fastest dimension first
    data = np.asarray(t.data) if kind in ("F32", "F16") else quants.dequantize(t.data, t.tensor_type)
    # np.array copies: the file is mapped read-only.
    return torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))


def gguf_state(reader: Any, cfg: GPTConfig, arch: str) -> dict[str, torch.Tensor]:
    hf: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if t.name in IGNORED:
            continue
        name = from_gguf_name(t.name)
        w = dequantize(t)
        if needs_permute(arch, name):
            w = llama_unpermute(w, heads_of(name, cfg.n_head, cfg.n_kv_head))
        hf["model." + name if name != "lm_head.weight" else name] = w
    return chatsmith_state(hf, cfg)


def import_gguf(src: str | Path, out_dir: str | Path, add_tool_tokens: bool = False) -> Path:
    """GGUF file -> chatsmith checkpoint at out_dir (written only when everything converted)."""
    src, out = Path(src), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ChatsmithError(f"{out} exists and is not an empty folder; remove it or choose another")
    reader = read_gguf(src)
    meta = metadata(reader)
    names = {t.name for t in reader.tensors}
    if "token_embd.weight" not in names:
        raise ChatsmithError(f"{src} has no token_embd.weight tensor")
    rows = int(next(t for t in reader.tensors if t.name == "token_embd.weight").shape[1])
    cfg, arch = gguf_config(meta, names, rows)
    bad = sorted({t.tensor_type.name for t in reader.tensors} - SUPPORTED)
    if bad:
        raise ChatsmithError(
            f"quantization {', '.join(bad)} is not supported; supported: {', '.join(sorted(SUPPORTED))}"
        )
    tk, n_tokens = tokenizer_from_gguf(meta)
    config, generation = configs_from_gguf(meta, tk, cfg.seq_len)
    state = gguf_state(reader, cfg, arch)
    added = add_missing_tokens(tk, add_tool_tokens)
    if added or tk.get_vocab_size() > rows:
        cfg = add_token_rows(state, cfg, added, n_tokens, tk.get_vocab_size())
    model = build(cfg, state)
    info = {
        "stage": "import",
        "step": 0,
        "source": {"path": str(src.resolve()), "architecture": arch, "format": "gguf",
                   "file_type": meta.get("general.file_type"), "name": meta.get("general.name")},
        "added_tokens": added,
        "added_rows": cfg.vocab_size - rows,
    }
    if out.exists():
        out.rmdir()
    save_checkpoint(out, model, BPETokenizer(tk, config, generation or None), info)
    return out


def import_gguf_main(src: str, out_dir: str, add_tool_tokens: bool = False) -> None:
    out = import_gguf(src, out_dir, add_tool_tokens)
    meta = json.loads((out / "meta.json").read_text())
    note = f"; added tokens {', '.join(meta['added_tokens'])}" if meta["added_tokens"] else ""
    cfg = json.loads((out / "config.json").read_text())["model"]
    n = dataclasses.asdict(GPTConfig(**cfg))["n_layer"]
    log.info(f"imported {src} ({meta['source']['architecture']}, {n} layers) to {out}{note}")
