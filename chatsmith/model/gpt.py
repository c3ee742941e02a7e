"""The network: a Qwen3-style decoder-only transformer, and nothing else.

Per block: RMSNorm -> attention (grouped-query, RMSNorm on q and k per head, RoPE) ->
residual; RMSNorm -> SwiGLU MLP -> residual. No biases. This is exactly Hugging Face's
Qwen3ForCausalLM, so export is a renaming of tensors (chatsmith.interop).

Two flags reach the neighbouring families so their checkpoints import losslessly:
`qk_norm=False` is Llama (LlamaForCausalLM), and with `qkv_bias=True` too it is Qwen2
(Qwen2ForCausalLM: biases on q, k and v, none on o).

Shapes: B batch, T time (tokens), C n_embd, H heads, G kv heads, D head_dim, V vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatsmith.model.attention import Attend, AttnMeta
from chatsmith.model.rope import apply_rope, rope_tables


@dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    head_dim: int
    intermediate_size: int
    seq_len: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    tie_embeddings: bool = False
    qk_norm: bool = True  # RMSNorm on q and k per head (Qwen3); False for Llama and Qwen2
    qkv_bias: bool = False  # biases on q, k and v projections (Qwen2)


class RMSNorm(nn.Module):
    """RMSNorm with a weight, computed in float32 as Qwen3 does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps) in float32, as Qwen3 computes it, in one fused op
        # (with the weight too when x is float32: the same numbers, one op fewer per norm).
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        y = F.rms_norm(x.float(), (x.size(-1),), eps=self.eps)
        return self.weight * y.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.H, self.G, self.D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, self.H * self.D, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.n_embd, self.G * self.D, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.n_embd, self.G * self.D, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.H * self.D, cfg.n_embd, bias=False)
        # Without qk_norm, Identity keeps one forward path (and no q_norm/k_norm weights).
        self.q_norm = RMSNorm(self.D, cfg.rms_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.D, cfg.rms_eps) if cfg.qk_norm else nn.Identity()
        self.attend = Attend(layer)  # causal, or over the KV cache a forward's metadata describes

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q (B, T, H*D), k and v (B, T, G*D)."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttnMeta | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x)
        q = self.q_norm(q.reshape(B, T, self.H, self.D)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_norm(k.reshape(B, T, self.G, self.D)).transpose(1, 2)  # (B, G, T, D)
        v = v.reshape(B, T, self.G, self.D).transpose(1, 2)  # (B, G, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = self.attend(q, k, v, meta)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.H * self.D)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttnMeta | None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # RoPE tables are derived, not learned: not saved, rebuilt by init_rope().
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)

    @torch.no_grad()
    def init_rope(self) -> None:
        # Tables cover twice the context so generation may run a little past seq_len.
        cos, sin = rope_tables(2 * self.cfg.seq_len, self.cfg.head_dim, self.cfg.rope_theta)
        self.rope_cos = cos.to(self.embed_tokens.weight.device)
        self.rope_sin = sin.to(self.embed_tokens.weight.device)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The one place weights are initialised (after building on the meta device).

        Linear layers: uniform with std 1/sqrt(fan_in); the projections that write into
        the residual stream (o_proj, down_proj) start at zero so every block starts as
        the identity (as in nanochat); biases start at zero. Untied lm_head starts near zero so the loss at
        init is ln(vocab); a tied embedding uses GPT-2's std of 0.02 for the same reason.
        """
        c = self.cfg
        for m in self.modules():
            if isinstance(m, RMSNorm):
                m.weight.fill_(1.0)
            elif isinstance(m, nn.Linear):
                bound = math.sqrt(3.0 / m.in_features)
                m.weight.uniform_(-bound, bound)
                if m.bias is not None:
                    m.bias.zero_()
        for block in self.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        if c.tie_embeddings:
            self.embed_tokens.weight.normal_(0.0, 0.02)
        else:
            self.embed_tokens.weight.normal_(0.0, 1.0)
            self.lm_head.weight.normal_(0.0, 0.001)
        self.init_rope()

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def hidden_states(self, idx: torch.Tensor, meta: AttnMeta | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> the final normed hidden states (B, T, C), before lm_head.

        With metadata, the tokens continue sequences held in a KV cache (model/attention.py).
        """
        T = idx.size(1)  # idx is (B, T)
        if meta is None:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, D)
        else:
            pos = meta.pos  # (T,), or (B, 1) for one new token per sequence
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]
            if pos.dim() == 2:
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D): broadcast over heads
        x = self.embed_tokens(idx)  # (B, T, C)
        for block in self.layers:
            x = block(x, cos, sin, meta)
        return self.norm(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        meta: AttnMeta | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V), or the loss when targets are given.

        Targets of -1 are ignored (prompt tokens, padding).
        """
        x = self.hidden_states(idx, meta)
        logits = self.lm_head(x).float()  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction=reduction
        )
