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

from chatsmith.model import cpu_attention, cpu_matmul
from chatsmith.model.kv_cache import Cache
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


class Linear(nn.Linear):
    """nn.Linear that, once packed for serving (`pack`), multiplies through chatsmith's CPU
    kernels (model/cpu_matmul.py). Same parameters and state dict as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("packed", None, persistent=False)  # a copy of weight: not saved

    @torch.no_grad()
    def pack(self) -> None:
        self.packed = cpu_matmul.pack(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_matmul.linear(x, self.weight, self.packed, self.bias)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer, self.H, self.G, self.D = layer, cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = Linear(cfg.n_embd, self.H * self.D, bias=cfg.qkv_bias)
        self.k_proj = Linear(cfg.n_embd, self.G * self.D, bias=cfg.qkv_bias)
        self.v_proj = Linear(cfg.n_embd, self.G * self.D, bias=cfg.qkv_bias)
        self.o_proj = Linear(self.H * self.D, cfg.n_embd, bias=False)
        # Without qk_norm, Identity keeps one forward path (and no q_norm/k_norm weights).
        self.q_norm = RMSNorm(self.D, cfg.rms_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.D, cfg.rms_eps) if cfg.qk_norm else nn.Identity()
        # Set by fuse(). Buffers, not saved: they move with the module, and torch.compile's
        # freezing packs them for the matmul like the weights themselves.
        self.register_buffer("qkv_weight", None, persistent=False)
        self.register_buffer("qkv_bias", None, persistent=False)
        self.register_buffer("qkv_packed", None, persistent=False)  # set by pack()

    @torch.no_grad()
    def fuse(self) -> None:
        """q, k and v in one matmul from a copy of their weights, for inference only (the copy
        does not follow later changes to the weights)."""
        p = (self.q_proj, self.k_proj, self.v_proj)
        self.qkv_weight = torch.cat([m.weight for m in p])
        if p[0].bias is not None:
            self.qkv_bias = torch.cat([m.bias for m in p])

    @torch.no_grad()
    def pack(self) -> None:
        """Pack the weights forward() multiplies by for cpu_matmul: the fused q/k/v one
        after fuse(), else q, k and v each; and o."""
        if self.qkv_weight is not None:
            self.qkv_packed = cpu_matmul.pack(self.qkv_weight)
        else:
            for m in (self.q_proj, self.k_proj, self.v_proj):
                m.pack()
        self.o_proj.pack()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Cache | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        if self.qkv_weight is None:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            qkv = cpu_matmul.linear(x, self.qkv_weight, self.qkv_packed, self.qkv_bias)
            q, k, v = qkv.split([self.H * self.D, self.G * self.D, self.G * self.D], dim=-1)
        q = self.q_norm(q.reshape(B, T, self.H, self.D)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_norm(k.reshape(B, T, self.G, self.D)).transpose(1, 2)  # (B, G, T, D)
        v = v.reshape(B, T, self.G, self.D).transpose(1, 2)  # (B, G, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None and cpu_attention.fits(q, k, v):
            # bf16 training on a CPU: a row-at-a-time kernel whose backward takes half the
            # time of ATen's flash backward at small head sizes (model/cpu_attention.py).
            y = cpu_attention.causal_attention(q, k, v)
        elif cache is None and q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # ATen's CPU flash attention is faster in float32 than in bf16 at small head sizes:
            # 27.9 against 32.4 ms per layer, forward and backward, at the demo's shape. Only
            # q without qk_norm arrives here in bf16 (under autocast the norm returns float32).
            y = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), is_causal=True, enable_gqa=self.H != self.G
            ).to(q.dtype)
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.H != self.G)
        else:
            # The cache stores the new keys/values and attends over them and the earlier ones
            # (each new query sees its own sequence, causally).
            y = cache.attend(self.layer, q, k, v)
        y = y.transpose(1, 2).reshape(B, T, self.H * self.D)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.n_embd, bias=False)
        self.register_buffer("gate_up", None, persistent=False)  # set by fuse()
        self.register_buffer("gate_up_packed", None, persistent=False)  # set by pack()

    @torch.no_grad()
    def fuse(self) -> None:
        """gate and up in one matmul from a copy of their weights, for inference only."""
        self.gate_up = torch.cat([self.gate_proj.weight, self.up_proj.weight])

    @torch.no_grad()
    def pack(self) -> None:
        """Pack the weights forward() multiplies by for cpu_matmul: the fused gate/up one
        after fuse(), else gate and up each; and down."""
        if self.gate_up is not None:
            self.gate_up_packed = cpu_matmul.pack(self.gate_up)
        else:
            self.gate_proj.pack()
            self.up_proj.pack()
        self.down_proj.pack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = cpu_matmul.linear(x, self.gate_up, self.gate_up_packed).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Cache | None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
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

    def fuse_projections(self) -> None:
        """For serving a model that no longer changes: q/k/v and gate/up each become one
        matmul over a copied, concatenated weight (fewer, larger matmuls: a quarter off a
        demo-sized decode step on a CPU). Costs a copy of those weights in memory."""
        for block in self.layers:
            block.self_attn.fuse()
            block.mlp.fuse()

    def pack_matmuls(self) -> None:
        """For serving a model that no longer changes, after fuse_projections: every matmul
        of the forward pass keeps a copy of its weight packed for chatsmith's CPU kernels
        (model/cpu_matmul.py): bf16 weights on CPUs with AVX512-BF16, float32 ones on CPUs
        with AVX2 or AVX-512; elsewhere nothing changes. The copies do not follow later
        changes to the weights."""
        for block in self.layers:
            block.self_attn.pack()
            block.mlp.pack()
        self.lm_head.pack()

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def hidden_states(self, idx: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> the final normed hidden states (B, T, C), before lm_head.

        With a cache, positions continue from what the cache holds (per sequence).
        """
        T = idx.size(1)  # idx is (B, T)
        if cache is None:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, D)
        else:
            pos = cache.positions(T)  # (T,) or (B, T) when sequences sit at different lengths
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]
            if pos.dim() == 2:
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D): broadcast over heads
        x = self.embed_tokens(idx)  # (B, T, C)
        for block in self.layers:
            x = block(x, cos, sin, cache)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: Cache | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V), or the loss when targets are given.

        Targets of -1 are ignored (prompt tokens, padding).
        """
        x = self.hidden_states(idx, cache)
        logits = self.lm_head(x).float()  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction=reduction
        )
