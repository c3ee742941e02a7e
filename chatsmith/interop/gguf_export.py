"""Export a chatsmith model to one GGUF file that llama.cpp (and Ollama, LM Studio) loads as is.

Written with the `gguf` package the way llama.cpp's convert_hf_to_gguf.py writes LlamaModel,
Qwen2Model and Qwen3Model: the same tensor names, hyper-parameter keys and llama's Q/K row
order. The tokenizer goes in whole (tokens, merges, the llama.cpp pre-tokenizer name that
splits as ours does, special-token ids) with the chat template, so no hash table of
convert_hf_to_gguf.py needs patching. A model imported from elsewhere keeps its own template,
BOS/EOS/unk ids and sampling defaults (from its tokenizer_config / generation_config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.interop.gguf_names import heads_of, llama_permute, needs_permute, to_gguf_name
from chatsmith.interop.gguf_tokenizer import CONTROL, NORMAL, UNUSED, USER_DEFINED, pre_name
from chatsmith.interop.hf_config import check_exportable
from chatsmith.interop.hf_export import export_tokenizer, generation_config
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import CHAT_TEMPLATE
from chatsmith.tokenizer.special import BOS, IM_END

# --type -> (tensor type, llama.cpp's general.file_type: LlamaFileType MOSTLY_*)
TYPES = {"f32": ("F32", 0), "f16": ("F16", 1), "bf16": ("BF16", 32), "q8_0": ("Q8_0", 7), "q4_0": ("Q4_0", 2)}
_SAMPLING = {"temperature": "temp", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
             "repetition_penalty": "penalty_repeat"}


def gguf_arch(cfg: GPTConfig) -> str:
    check_exportable(cfg)
    if cfg.qk_norm and cfg.qkv_bias:
        raise ChatsmithError(
            "llama.cpp's qwen3 has no q/k/v biases: a model with qk_norm and qkv_bias cannot go to GGUF"
        )
    return "qwen3" if cfg.qk_norm else ("qwen2" if cfg.qkv_bias else "llama")


def _encode(t: torch.Tensor, kind: str) -> tuple[np.ndarray, Any]:
    """The tensor's bytes (or floats) and the raw type to write them as."""
    from gguf import GGMLQuantizationType, quants

    arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
    if t.ndim == 1 or kind == "F32":  # norms stay F32, as llama.cpp expects
        return arr, None
    if kind == "F16":
        return arr.astype(np.float16), None
    qtype = GGMLQuantizationType[kind]
    try:
        return quants.quantize(arr, qtype), qtype
    except quants.QuantError:  # a row not a multiple of the block size: F16, as the converter does
        return arr.astype(np.float16), None


def add_tensors(w: Any, model: GPT, arch: str, kind: str) -> None:
    cfg = model.cfg
    for name, t in model.state_dict().items():
        if cfg.tie_embeddings and name == "lm_head.weight":
            continue
        if needs_permute(arch, name):
            t = llama_permute(t, heads_of(name, cfg.n_head, cfg.n_kv_head))
        data, raw = _encode(t, kind)
        w.add_tensor(to_gguf_name(name), data, raw_dtype=raw)


def add_hparams(w: Any, cfg: GPTConfig, arch: str) -> None:
    w.add_context_length(cfg.seq_len)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_kv_head)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_rope_dimension_count(cfg.head_dim)


def _id(tok: BPETokenizer, token: Any) -> int | None:
    content = token.get("content") if isinstance(token, dict) else token
    return tok.tok.token_to_id(content) if isinstance(content, str) else None


def chat_settings(tok: BPETokenizer) -> dict[str, Any]:
    """Template, special ids and sampling defaults: the model's own, or chatsmith's."""
    if tok.config is not None:
        c = tok.config
        ids = {k: _id(tok, c.get(f"{k}_token")) for k in ("bos", "eos", "unk", "pad")}
        template = c.get("chat_template")
        add_bos, add_eos = bool(c.get("add_bos_token", False)), bool(c.get("add_eos_token", False))
        gen = tok.generation or {}
    else:
        eot = tok.token_id(BOS)
        ids = {"bos": eot, "eos": tok.token_id(IM_END), "unk": None, "pad": eot}
        template, add_bos, add_eos, gen = CHAT_TEMPLATE, False, False, generation_config(tok)
    return {"ids": ids, "template": template, "add_bos": add_bos, "add_eos": add_eos, "generation": gen}


def add_tokenizer(w: Any, tok: BPETokenizer, rows: int) -> None:
    spec = json.loads(tok.tok.to_str())
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(rows):
        piece = tok.tok.id_to_token(i)
        if piece is None:  # rows beyond the tokenizer, as convert_hf_to_gguf.py names them
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tokens.append(piece)
        types.append((CONTROL if added[i]["special"] else USER_DEFINED) if i in added else NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_name(tok.tok))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    s = chat_settings(tok)
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id),
                     ("unk", w.add_unk_token_id), ("pad", w.add_pad_token_id)):
        if s["ids"][key] is not None:
            add(s["ids"][key])
    w.add_add_bos_token(s["add_bos"])
    w.add_add_eos_token(s["add_eos"])
    if s["template"]:
        w.add_chat_template(s["template"])
    for name, key in _SAMPLING.items():
        if s["generation"].get("do_sample", True) and name in s["generation"]:
            value = s["generation"][name]
            (w.add_int32 if name == "top_k" else w.add_float32)(f"general.sampling.{key}", value)


def export_gguf(
    model: GPT, tok: BPETokenizer, out_file: str | Path, kind: str = "f16", name: str = ""
) -> Path:
    """Write the GGUF file (to a temporary name, renamed into place when complete)."""
    from gguf import GGML_QUANT_VERSION, GGUFWriter

    if kind not in TYPES:
        raise ChatsmithError(f"GGUF type {kind!r} is not supported; choose one of {', '.join(TYPES)}")
    cfg = model.cfg
    arch = gguf_arch(cfg)
    if tok.vocab_size > cfg.vocab_size:
        raise ChatsmithError(f"tokenizer has {tok.vocab_size} tokens, the model only {cfg.vocab_size} rows")
    out = Path(out_file)
    if out.exists():
        raise ChatsmithError(f"{out} exists; remove it or choose another name")
    pre_name(tok.tok)  # refuse before writing anything
    tok = export_tokenizer(tok) if tok.config is None else tok
    tensor_kind, file_type = TYPES[kind]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    w = GGUFWriter(str(tmp), arch)
    ok = False
    try:
        w.add_name(name or out.stem)
        w.add_file_type(file_type)
        if tensor_kind.startswith("Q"):
            w.add_quantization_version(GGML_QUANT_VERSION)
        add_hparams(w, cfg, arch)
        add_tokenizer(w, tok, cfg.vocab_size)
        add_tensors(w, model, arch, tensor_kind)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        ok = True
    finally:
        w.close()
        if not ok:
            tmp.unlink(missing_ok=True)
    os.replace(tmp, out)
    return out


def export_gguf_main(model_path: str, out_file: str, kind: str = "f16") -> None:
    """`chatsmith export --model PATH --to gguf FILE [--type f16|bf16|q8_0]`."""
    model, tok, _ = load_checkpoint(Path(model_path))
    out = export_gguf(model, tok, out_file, kind, name=Path(model_path).name)
    size = out.stat().st_size / 1e6
    log.info(f"exported {model_path} to {out} ({gguf_arch(model.cfg)}, {kind}, {size:.1f} MB)")
