"""GPTConfig <-> Hugging Face `config.json`, tensor names, and what each side refuses.

Three Hugging Face families are the same network as ours up to two flags:

    Qwen3ForCausalLM   qk_norm=True                   (our default)
    LlamaForCausalLM   qk_norm=False
    Qwen2ForCausalLM   qk_norm=False, qkv_bias=True   (biases on q, k and v; none on o)

Qwen3 and Llama carry q/k/v biases too, with `attention_bias`, which also biases o_proj:
chatsmith has none there, so such a checkpoint imports when its o_proj biases are zero,
and a chatsmith model with qkv_bias exports that way (zero o_proj bias) where Qwen2 is not
a fit (see hf_export.qwen2_tokenizer_fits).

Keys follow transformers' Qwen3Config / Qwen2Config / LlamaConfig. RoPE is written both
the classic way (`rope_theta`, `rope_scaling`), which vLLM and llama.cpp's converter read,
and as transformers 5's `rope_parameters`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.model.gpt import GPTConfig

# architecture -> (model_type, qk_norm, qkv_bias without attention_bias)
FAMILIES: dict[str, tuple[str, bool, bool]] = {
    "Qwen3ForCausalLM": ("qwen3", True, False),
    "LlamaForCausalLM": ("llama", False, False),
    "Qwen2ForCausalLM": ("qwen2", False, True),
}
# Defaults of the transformers config classes for keys a config.json may omit.
_MAX_POSITIONS = {"qwen3": 32768, "qwen2": 32768, "llama": 2048}


# ---- export: which models can leave, and as what ------------------------------------------
# Each check returns the reason a config cannot be exported, or None. A config flag that
# leaves the Hugging Face families (softcap, ReLU², value embeddings...) adds its check here.
EXPORT_CHECKS: list[Callable[[GPTConfig], str | None]] = []


def export_refusals(cfg: GPTConfig) -> list[str]:
    """Every reason this model cannot be exported; empty when it can."""
    return [r for check in EXPORT_CHECKS if (r := check(cfg)) is not None]


def check_exportable(cfg: GPTConfig) -> None:
    reasons = export_refusals(cfg)
    if reasons:
        raise ChatsmithError("this model cannot be exported to Hugging Face format: " + "; ".join(reasons))


def export_architecture(cfg: GPTConfig, qwen2_fits: bool) -> tuple[str, bool]:
    """The architecture to write, and whether it needs attention_bias (q/k/v biases + a zero o_proj bias).

    qwen2_fits: the tokenizer survives transformers' Qwen2 tokenizer (hf_export.qwen2_tokenizer_fits).
    """
    check_exportable(cfg)
    if cfg.qk_norm:
        return "Qwen3ForCausalLM", cfg.qkv_bias
    if not cfg.qkv_bias:
        return "LlamaForCausalLM", False
    # Qwen2Config has no head_dim: transformers and vLLM derive it as hidden_size / heads.
    if qwen2_fits and cfg.head_dim * cfg.n_head == cfg.n_embd:
        return "Qwen2ForCausalLM", False
    return "LlamaForCausalLM", True


def to_hf_config(
    cfg: GPTConfig, arch: str, attention_bias: bool, dtype: str, bos_id: int, eos_id: int, pad_id: int
) -> dict[str, Any]:
    model_type = FAMILIES[arch][0]
    d: dict[str, Any] = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "dtype": dtype,  # transformers >= 4.56; older readers (and vLLM with them) read torch_dtype
        "torch_dtype": dtype,
    }
    if model_type in ("qwen3", "qwen2"):
        d.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layer)
    if model_type in ("qwen3", "llama"):
        d["attention_bias"] = attention_bias
    if model_type == "llama":
        d.update(mlp_bias=False, pretraining_tp=1)
    return d


# ---- import: which checkpoints can come in ---------------------------------------------------
def _rope(d: dict[str, Any]) -> float:
    """rope_theta, refusing scaled or partial RoPE (not implemented in chatsmith.model.rope)."""
    params = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise ChatsmithError("RoPE parameters per layer type are not supported")
    for p in (params, scaling):
        kind = p.get("rope_type", p.get("type"))
        if kind not in (None, "default"):
            raise ChatsmithError(f"rope scaling type {kind!r} is not implemented (only plain RoPE is)")
    if float(d.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))) != 1.0:
        raise ChatsmithError("partial rotary embeddings (partial_rotary_factor != 1) are not supported")
    return float(params.get("rope_theta", d.get("rope_theta", 10000.0)))


def from_hf_config(d: dict[str, Any]) -> tuple[GPTConfig, str]:
    """A chatsmith GPTConfig and the architecture name; a ChatsmithError says what is unsupported."""
    archs = d.get("architectures") or []
    by_type = {t: a for a, (t, _, _) in FAMILIES.items()}
    arch = archs[0] if archs else by_type.get(d.get("model_type"), d.get("model_type"))
    if arch not in FAMILIES:
        raise ChatsmithError(
            f"architecture {arch!r} is not supported; chatsmith imports {', '.join(FAMILIES)}"
        )
    model_type, qk_norm, qkv_bias = FAMILIES[arch]
    if d.get("model_type", model_type) != model_type:
        raise ChatsmithError(f"config.json says {arch} but model_type {d.get('model_type')!r}")
    if d.get("quantization_config"):
        raise ChatsmithError("quantized checkpoints are not supported; import the unquantized weights")
    if d.get("hidden_act", "silu") != "silu":
        raise ChatsmithError(f"hidden_act {d['hidden_act']!r} is not supported (only silu, as SwiGLU)")
    if d.get("use_sliding_window"):
        raise ChatsmithError("sliding-window attention (use_sliding_window) is not supported")
    other = sorted({t for t in d.get("layer_types") or [] if t != "full_attention"})
    if other:
        raise ChatsmithError(f"layer types {other} are not supported (only full_attention)")
    if d.get("mlp_bias"):
        raise ChatsmithError("mlp_bias is not supported")
    rope_theta = _rope(d)
    try:
        n_embd, n_head = int(d["hidden_size"]), int(d["num_attention_heads"])
        n_kv = int(d.get("num_key_value_heads") or n_head)
        head_dim = int(d.get("head_dim") or n_embd // n_head)
        cfg = GPTConfig(
            vocab_size=int(d["vocab_size"]),
            n_layer=int(d["num_hidden_layers"]),
            n_embd=n_embd,
            n_head=n_head,
            n_kv_head=n_kv,
            head_dim=head_dim,
            intermediate_size=int(d["intermediate_size"]),
            seq_len=int(d.get("max_position_embeddings") or _MAX_POSITIONS[model_type]),
            rope_theta=rope_theta,
            rms_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            qk_norm=qk_norm,
            qkv_bias=qkv_bias or bool(d.get("attention_bias")),  # o_proj's bias is checked on import
        )
    except KeyError as e:
        raise ChatsmithError(f"config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ChatsmithError(f"config.json has a malformed value ({e})") from None
    if n_head % n_kv:
        raise ChatsmithError(
            f"num_attention_heads ({n_head}) is not a multiple of num_key_value_heads ({n_kv})"
        )
    if head_dim % 2:
        raise ChatsmithError(f"head_dim ({head_dim}) must be even for RoPE")
    return cfg, arch


# ---- tensor names ------------------------------------------------------------------------------
def to_hf_name(name: str) -> str:
    """Our parameter names are Hugging Face's without the `model.` prefix (lm_head excepted)."""
    return name if name.startswith("lm_head.") else "model." + name


def from_hf_name(name: str) -> str:
    return name.removeprefix("model.")
