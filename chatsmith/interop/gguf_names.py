"""What GGUF (llama.cpp's file format) calls our tensors and hyper-parameters, and the one
tensor transform between the two: llama's Q/K row order.

Names and keys follow llama.cpp's gguf-py (gguf.constants: MODEL_TENSOR names, Keys.LLM and
Keys.Attention) as convert_hf_to_gguf.py writes them for LlamaModel, Qwen2Model and Qwen3Model.
"""

from __future__ import annotations

import re

import torch

from chatsmith.common.errors import ChatsmithError

# GGUF architecture -> (qk_norm, qkv_bias). llama.cpp's qwen2 requires q/k/v biases, qwen3
# has q/k RMSNorm and no biases, llama neither (its biases are optional in llama.cpp).
ARCHS: dict[str, tuple[bool, bool]] = {
    "llama": (False, False),
    "qwen2": (False, True),
    "qwen3": (True, False),
}

# our name (layers.{i}. prefix stripped) -> GGUF name (blk.{i}. prefix stripped)
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_TOP_BACK = {v: k for k, v in _TOP.items()}
# Tensors llama.cpp's converter may write that carry nothing chatsmith needs (precomputed RoPE).
IGNORED = {"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"}


def to_gguf_name(name: str) -> str:
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if m:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}"
    return _TOP[name]


def from_gguf_name(name: str) -> str:
    """Our parameter name for a GGUF tensor name; a ChatsmithError for one chatsmith has no place for."""
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER_BACK:
        ours: str | None = f"layers.{m.group(1)}.{_LAYER_BACK[m.group(2)]}"
    else:
        ours = _TOP_BACK.get(name)
    if ours is None:
        raise ChatsmithError(f"tensor {name!r} has no counterpart in chatsmith's network")
    return ours


def llama_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's rotate-half row order of q/k (weights or biases) -> llama.cpp's interleaved pairs.

    llama.cpp's llama architecture rotates adjacent pairs (x[2i], x[2i+1]); HF checkpoints,
    and chatsmith, rotate (x[i], x[i + D/2]). convert_hf_to_gguf.py (LlamaModel.permute)
    reorders each head's rows so both compute the same; qwen2/qwen3 use the NEOX rope and keep it.
    """
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def llama_unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of llama_permute (as transformers' LlamaTensorProcessor does on GGUF load)."""
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def needs_permute(arch: str, name: str) -> bool:
    return arch == "llama" and bool(re.search(r"self_attn\.[qk]_proj\.", name))


def heads_of(name: str, n_head: int, n_kv_head: int) -> int:
    return n_head if ".q_proj." in name else n_kv_head
