"""Causal self-attention for bf16 training on CPUs, one batch row at a time.

ATen's CPU flash attention recomputes the scores block by block in its backward, with many
small matrix products; at small head sizes it costs three times its forward (the demo's
8 heads of 32 over 256 tokens, batch 16, on a 2-core EPYC: 10 ms forward, 31 ms backward
per layer). Here each batch row's (H, T, T) scores are computed whole, in float32 (one
batched matmul that also adds the causal mask), and the probabilities are kept in bf16 for
the backward, which is then four bf16 matmuls and one elementwise pass (the backward of
Dao et al. 2022 without its recomputation): 10 ms forward and 15 ms backward.

Keeping the probabilities costs B x H x T x T bf16 per layer, so `fits` lets a model use
this path only while that stays under MAX_BYTES; beyond it, and for inference, evaluation
and float32 runs, attention goes through F.scaled_dot_product_attention as before.
Registered as a custom op so torch.compile calls it as one opaque kernel.
"""

from __future__ import annotations

import torch

MAX_BYTES = 64 * 2**20  # kept probabilities per layer


def fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether q, k, v (B, H, T, D) may take this path: bf16 projections (v is not normed, so
    its dtype is theirs under autocast) on a CPU, training, plain multi-head attention (no
    grouped kv heads), and the kept probabilities under MAX_BYTES."""
    B, H, T, _ = q.shape
    return (
        q.device.type == "cpu"
        and v.dtype == torch.bfloat16
        and torch.is_grad_enabled()
        and q.requires_grad
        and k.size(1) == H
        and B * H * T * T * 2 <= MAX_BYTES
    )


@torch.library.custom_op("chatsmith::causal_attention", mutates_args=())
def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, T, D) bf16 -> output (B, H, T, D) and the probabilities (B, H, T, T)."""
    B, H, T, D = q.shape
    # 0 where a query may look, -inf on its future: added to the scores by the matmul itself.
    future = torch.full((T, T), float("-inf"), device=q.device).triu(1).expand(H, T, T)
    out, probs = torch.empty_like(q), q.new_empty(B, H, T, T)
    for b in range(B):  # one row's scores (H x T x T floats) stay in cache
        # Scores in float32 (the small q, k converted; as flash attention keeps them).
        s = torch.baddbmm(future, q[b].float(), k[b].float().transpose(-1, -2), alpha=D**-0.5)
        probs[b] = torch.softmax(s, dim=-1)
        torch.matmul(probs[b], v[b], out=out[b])
    return out, probs


@_forward.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, _ = q.shape
    return torch.empty_like(q), q.new_empty(B, H, T, T)


@torch.library.custom_op("chatsmith::causal_attention_backward", mutates_args=())
def _backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    probs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of q, k, v given the output's (dout) and the kept probabilities."""
    D = q.size(-1)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    # delta_i = sum_j p_ij dp_ij = dout_i . out_i: the softmax backward's row term.
    delta = (dout.float() * out.float()).sum(-1, keepdim=True)
    for b in range(dout.size(0)):
        p = probs[b]
        torch.matmul(p.transpose(-1, -2), dout[b], out=dv[b])
        dp = torch.matmul(dout[b], v[b].transpose(-1, -2)).float()
        ds = dp.sub_(delta[b]).mul_(p).mul_(D**-0.5).to(q.dtype)  # d(scores), scaled
        torch.matmul(ds, k[b], out=dq[b])
        torch.matmul(ds.transpose(-1, -2), q[b], out=dk[b])
    return dq, dk, dv


@_backward.register_fake
def _(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *kept: torch.Tensor) -> tuple:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(*inputs, *output)


def _grad(ctx: torch.autograd.function.FunctionCtx, dout: torch.Tensor, _dprobs: torch.Tensor) -> tuple:
    q, k, v, out, probs = ctx.saved_tensors  # type: ignore[attr-defined]
    return _backward(dout.contiguous(), q, k, v, out, probs)


_forward.register_autograd(_grad, setup_context=_setup)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q, k, v (B, H, T, D), computed in bf16 (as autocast would run
    SDPA); returns (B, H, T, D) bf16. Check `fits` first."""
    bf = torch.bfloat16
    return _forward(q.to(bf).contiguous(), k.to(bf).contiguous(), v.to(bf).contiguous())[0]
