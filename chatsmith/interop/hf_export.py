"""Export a chatsmith model to a Hugging Face folder that transformers, vLLM and llama.cpp load.

The folder holds what a Hub model repository holds:

    config.json              Qwen3ForCausalLM (or Llama/Qwen2, see hf_config)
    model.safetensors        or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json           our tokenizer (already in `tokenizers` format), tool tags non-special
    tokenizer_config.json    ChatML chat_template, special tokens, tokenizer class
    generation_config.json   stop tokens and default sampling

No conversion of the network is needed: tensor names gain the `model.` prefix, nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.interop.hf_config import export_architecture, to_hf_config, to_hf_name
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import CHAT_TEMPLATE
from chatsmith.tokenizer.special import (
    BOS,
    IM_END,
    TOOL_CALL,
    TOOL_CALL_END,
    TOOL_RESPONSE,
    TOOL_RESPONSE_END,
)

DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' default for save_pretrained
FORMATS = ("hf", "gguf")  # gguf: interop/gguf_export.py
DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
# transformers' Qwen2Tokenizer split pattern (models/qwen2/tokenization_qwen2.py, PRETOKENIZE_REGEX).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def parse_size(size: int | str) -> int:
    """Bytes from 5_000_000_000, "5GB" (10^9, as transformers counts) or "4GiB"."""
    if isinstance(size, int):
        n = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size)
        if not m or m.group(2).upper() not in _UNITS:
            raise ChatsmithError(f"max_shard_size {size!r} is not a size such as 5GB or 500MiB")
        n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise ChatsmithError(f"max_shard_size must be positive, got {size!r}")
    return n


def export_tokenizer(tok: BPETokenizer) -> BPETokenizer:
    """The same tokenizer with the tool tags as ordinary added tokens, as Qwen ships them.

    Readers that decode with skip_special_tokens (vLLM by default; llama.cpp prints no
    control tokens) then keep `<tool_call>` in the text, where the hermes parser looks for
    it. Encoding is unchanged: added tokens are matched whole either way.
    """
    spec = json.loads(tok.tok.to_str())
    for t in spec.get("added_tokens", []):
        if t["content"] in (TOOL_CALL, TOOL_CALL_END, TOOL_RESPONSE, TOOL_RESPONSE_END):
            t["special"] = False
    return BPETokenizer(Tokenizer.from_str(json.dumps(spec)))


def qwen2_tokenizer_fits(tok: BPETokenizer) -> bool:
    """Whether transformers >= 5 would tokenize like `tok` in a Qwen2 export.

    For model_type qwen2 it builds Qwen2Tokenizer from tokenizer.json's vocabulary and merges
    but with Qwen's own NFC normaliser and split pattern, whatever tokenizer.json says; only a
    tokenizer with that pipeline (an imported Qwen2 one) comes through unchanged.
    """
    spec = json.loads(tok.tok.to_str())
    pre = spec.get("pre_tokenizer") or {}
    steps = [
        (
            s.get("type"),
            (s.get("pattern") or {}).get("Regex"),
            s.get("behavior"),
            s.get("invert"),
            s.get("add_prefix_space"),
            s.get("use_regex"),
        )
        for s in pre.get("pretokenizers", [pre])
    ]
    expected = [
        ("Split", QWEN2_SPLIT, "Isolated", False, None, None),
        ("ByteLevel", None, None, None, False, False),
    ]
    return (spec.get("normalizer") or {}).get("type") == "NFC" and steps == expected


def hf_state_dict(
    model: GPT, dtype: torch.dtype | None = None, o_bias: bool = False
) -> dict[str, torch.Tensor]:
    """Tensors under Hugging Face names; a tied lm_head is omitted, as Hugging Face saves it.

    o_bias adds the zero o_proj biases that attention_bias=True (Qwen3, Llama) requires.
    """
    state = {}
    for name, t in model.state_dict().items():
        if model.cfg.tie_embeddings and name == "lm_head.weight":
            continue
        state[to_hf_name(name)] = t.detach().to("cpu", dtype or t.dtype).contiguous()
    if o_bias:
        zero = torch.zeros(model.cfg.n_embd, dtype=state["model.embed_tokens.weight"].dtype)
        for i in range(model.cfg.n_layer):
            state[f"model.layers.{i}.self_attn.o_proj.bias"] = zero.clone()
    return state


def write_weights(state: dict[str, torch.Tensor], out: Path, max_shard_size: int | str) -> list[str]:
    """One model.safetensors, or shards of at most max_shard_size plus the index transformers reads."""
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > limit:  # a tensor above the limit gets a shard of its own
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(state, str(out / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for f, shard in zip(files, shards):
        save_file(shard, str(out / f), metadata=meta)
        weight_map.update(dict.fromkeys(shard, f))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return files


def added_tokens_decoder(tok: BPETokenizer) -> dict[str, Any]:
    return {
        str(i): {
            "content": t.content,
            "lstrip": t.lstrip,
            "normalized": t.normalized,
            "rstrip": t.rstrip,
            "single_word": t.single_word,
            "special": t.special,
        }
        for i, t in sorted(tok.tok.get_added_tokens_decoder().items())
    }


def tokenizer_config(tok: BPETokenizer, max_length: int) -> dict[str, Any]:
    """The generic fast tokenizer over our tokenizer.json, with the ChatML template.

    `PreTrainedTokenizerFast` (not Qwen2Tokenizer) so transformers uses tokenizer.json as
    it is instead of rebuilding a pipeline; no BOS is added, as chatsmith adds none.
    An imported model's own tokenizer_config is written back as it came (its added tokens
    listed anew, in case import added some).
    """
    if tok.config is not None:
        return {**tok.config, "added_tokens_decoder": added_tokens_decoder(tok)}
    decoder = added_tokens_decoder(tok)
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": max_length,
        "pad_token": BOS,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def generation_config(tok: BPETokenizer) -> dict[str, Any]:
    """A turn ends at <|im_end|> (or a stray <|endoftext|>); sampling defaults as chatsmith chat's.
    An imported model's own generation_config is written back unchanged."""
    if tok.generation is not None:
        return dict(tok.generation)
    if tok.config is not None:
        ids = special_ids(tok)
        return {f"{k}_token_id": v for k, v in ids.items() if v is not None}
    eot = tok.token_id(BOS)
    return {
        "bos_token_id": eot,
        "eos_token_id": [tok.im_end_id, eot],
        "pad_token_id": eot,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
    }


def special_ids(tok: BPETokenizer) -> dict[str, int | None]:
    """bos/eos/pad ids: the imported model's own (from its tokenizer_config), or chatsmith's."""
    if tok.config is None:
        eot = tok.token_id(BOS)
        return {"bos": eot, "eos": tok.im_end_id, "pad": eot}

    def id_of(key: str) -> int | None:
        v = tok.config.get(f"{key}_token")  # type: ignore[union-attr]
        v = v.get("content") if isinstance(v, dict) else v
        return tok.tok.token_to_id(v) if isinstance(v, str) else None

    return {k: id_of(k) for k in ("bos", "eos", "pad")}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def export_hf(
    model: GPT,
    tok: BPETokenizer,
    out_dir: str | Path,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the Hugging Face folder (into a temporary one, then renamed into place)."""
    cfg = model.cfg
    arch, attention_bias = export_architecture(cfg, qwen2_tokenizer_fits(tok))
    if tok.vocab_size > cfg.vocab_size:
        raise ChatsmithError(f"tokenizer has {tok.vocab_size} tokens, the model only {cfg.vocab_size} rows")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ChatsmithError(f"{out} exists and is not an empty folder; remove it or choose another")
    state = hf_state_dict(model, dtype, o_bias=attention_bias)
    dtype_name = DTYPES.get(state["model.embed_tokens.weight"].dtype)
    if dtype_name is None:
        raise ChatsmithError(f"cannot export weights of dtype {state['model.embed_tokens.weight'].dtype}")
    tok = export_tokenizer(tok) if tok.config is None else tok
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ids = special_ids(tok)
    hf_cfg = to_hf_config(cfg, arch, attention_bias, dtype_name, ids["bos"], ids["eos"], ids["pad"])
    _write_json(tmp / "config.json", hf_cfg)
    write_weights(state, tmp, max_shard_size)
    tok.save(tmp / "tokenizer.json")
    _write_json(tmp / "tokenizer_config.json", tokenizer_config(tok, cfg.seq_len))
    _write_json(tmp / "generation_config.json", generation_config(tok))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def stored_dtype(checkpoint: Path) -> torch.dtype:
    """The dtype a chatsmith checkpoint's weights were saved in (load_checkpoint gives float32)."""
    with safe_open(str(Path(checkpoint) / "model.safetensors"), framework="pt") as f:
        return _SAFETENSORS_DTYPES.get(f.get_slice("embed_tokens.weight").get_dtype(), torch.float32)


def export_main(
    model_path: str, to: str, out_dir: str, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
) -> None:
    """`chatsmith export --model PATH --to hf DIR` (GGUF: interop.entry.export_main)."""
    if to != "hf":
        raise ChatsmithError(f"unknown export format {to!r}; supported: {', '.join(FORMATS)}")
    if (Path(model_path) / "adapter_config.json").is_file():
        raise ChatsmithError(
            f"{model_path} is a LoRA adapter: add --merge-lora to export it merged into its base "
            "(or export the base and load the adapter folder with peft)"
        )
    model, tok, _ = load_checkpoint(Path(model_path))
    dtype = stored_dtype(Path(model_path))
    out = export_hf(model, tok, out_dir, max_shard_size=max_shard_size, dtype=dtype)
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    n = model.num_params() / 1e6
    log.info(f"exported {model_path} to {out} ({arch}, {DTYPES[dtype]}, {n:.1f}M parameters)")
