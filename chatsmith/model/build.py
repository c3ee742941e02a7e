"""From the user's ModelConfig (one `depth` dial) to a GPTConfig and an initialised model."""

from __future__ import annotations

import torch

from chatsmith.common.config import ModelConfig
from chatsmith.common.errors import ChatsmithError
from chatsmith.model.gpt import GPT, GPTConfig


def gpt_config(m: ModelConfig, vocab_size: int) -> GPTConfig:
    """Width follows depth (n_embd = depth * aspect_ratio, a multiple of head_dim), as in nanochat."""
    n_embd = m.n_embd or max(m.head_dim, round(m.depth * m.aspect_ratio / m.head_dim) * m.head_dim)
    if n_embd % m.head_dim:
        raise ChatsmithError(f"model.n_embd ({n_embd}) must be a multiple of model.head_dim ({m.head_dim})")
    n_head = m.n_head or n_embd // m.head_dim
    n_kv = m.n_kv_head or n_head
    if n_head % n_kv:
        raise ChatsmithError(f"model.n_head ({n_head}) must be a multiple of model.n_kv_head ({n_kv})")
    inter = m.intermediate_size or max(64, round(3 * n_embd / 64) * 64)
    vocab = m.vocab_size or vocab_size
    if vocab < vocab_size:
        raise ChatsmithError(f"model.vocab_size ({vocab}) is smaller than the tokenizer's ({vocab_size})")
    return GPTConfig(
        vocab_size=vocab,
        n_layer=m.depth,
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=n_kv,
        head_dim=m.head_dim,
        intermediate_size=inter,
        seq_len=m.seq_len,
        rope_theta=m.rope_theta,
        rms_eps=m.rms_eps,
        tie_embeddings=m.tie_embeddings,
    )


def build_model(cfg: GPTConfig, device: torch.device | str = "cpu", seed: int | None = None) -> GPT:
    """Build on the meta device (no memory touched), then allocate and initialise once."""
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    if seed is not None:
        torch.manual_seed(seed)
    model.init_weights()
    return model
