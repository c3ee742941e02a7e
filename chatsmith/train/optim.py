"""Optimizers: Muon for the hidden 2-D weight matrices, AdamW for everything else.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers", as used by modded-nanogpt
and nanochat) replaces each matrix's momentum update by its nearest semi-orthogonal matrix,
found with a few Newton-Schulz iterations. It only makes sense for the matrices inside the
blocks; embeddings, the output head, norm weights and anything a later stage adds (a reward
model's scalar head, say) go to AdamW, as in those projects.

torch.optim.Muon does the same for plain tensors, but under FSDP2 a parameter is a DTensor
shard and the orthogonalisation needs the whole matrix; this implementation gathers it, so
one optimizer serves one process, DDP and FSDP2 alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from chatsmith.common.config import TrainConfig
from chatsmith.model.gpt import GPT

# The quintic coefficients tuned by Keller Jordan for modded-nanogpt: they push all singular
# values into roughly [0.7, 1.2] in five steps, which is as good as exact orthogonalisation.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T (Newton-Schulz), in `dtype` (bf16 is enough).

    g is one matrix (m, n) or a stack of them (k, m, n), each orthogonalised on its own: a
    stack runs as batched matmuls, far fewer and larger calls for a model's many same-shape
    matrices.
    """
    a, b, c = NS_COEFFS
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    addmm = torch.baddbmm if x.dim() == 3 else torch.addmm
    for _ in range(steps):
        A = x @ x.mT
        B = addmm(A, A, A, beta=b, alpha=c)  # b A + c A A, in one call
        x = addmm(x, B, x, beta=a)  # a x + B x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD-momentum (Nesterov) whose update is orthogonalised; for 2-D parameters only.

    The update is scaled by sqrt(max(1, rows/cols)) as in torch.optim.Muon's "original" rule and
    nanochat, so tall matrices (the MLP's up projections) take comparable steps.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.ns_steps, self.ns_dtype = ns_steps, ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon takes 2-D parameters only, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            # Momentum per parameter, then one batched orthogonalisation per shape.
            by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)
                g = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                full = g.full_tensor() if isinstance(g, DTensor) else g
                by_shape.setdefault(tuple(full.shape), []).append((p, full))
            for (rows, cols), pairs in by_shape.items():
                us = orthogonalize(torch.stack([f for _, f in pairs]), self.ns_steps, self.ns_dtype)
                us *= max(1.0, rows / cols) ** 0.5
                for (p, _), u in zip(pairs, us.unbind(0)):
                    if isinstance(
                        p, DTensor
                    ):  # every rank computed the same full update; keep this rank's shard
                        u = distribute_tensor(u, p.device_mesh, p.placements, src_data_rank=None)
                    if wd:
                        p.mul_(1 - lr * wd)
                    p.add_(u, alpha=-lr)


class Optimizers:
    """Several optimizers stepped as one: the loop sees one `param_groups` list."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state["optimizers"]
        if len(states) != len(self.optimizers):
            n = len(self.optimizers)
            raise ValueError(f"optimizer state holds {len(states)} optimizers, expected {n}")
        for o, s in zip(self.optimizers, states):
            o.load_state_dict(s)


def find_gpt(model: torch.nn.Module) -> GPT:
    """The GPT inside a (possibly wrapped or extended) model."""
    for m in model.modules():
        if isinstance(m, GPT):
            return m
    raise TypeError(f"{type(model).__name__} holds no GPT")


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device, dtype: torch.dtype = torch.float32
) -> Optimizers:
    """Muon (or AdamW, by cfg.optimizer) for block matrices; AdamW for the rest, by nanochat's groups.

    Each group's base rate is stored as `base_lr` so the schedule scales all alike. Parameters
    outside the GPT's blocks that the grouping does not know (a stage's extra head) get AdamW
    at `cfg.lr`. Weight decay applies to the block matrices only.
    """
    if cfg.optimizer not in ("muon", "adamw"):
        raise ValueError(f"unknown optimizer '{cfg.optimizer}'")
    gpt = find_gpt(model)
    embed = [gpt.embed_tokens.weight]
    head = [] if gpt.cfg.tie_embeddings else [gpt.lm_head.weight]
    # A tied matrix is also the output head, which diverges at the embeddings' large rate.
    embed_lr = cfg.unembedding_lr if gpt.cfg.tie_embeddings else cfg.embedding_lr
    special = {id(p) for p in embed + head}
    block_params = {id(p) for p in gpt.layers.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in params if id(p) in block_params and p.dim() == 2]
    seen = special | {id(p) for p in matrices}
    others = [p for p in params if id(p) not in seen]  # norms, biases, unknown extra modules
    adam_groups = [
        {"params": embed, "base_lr": embed_lr, "weight_decay": 0.0},
        {"params": head, "base_lr": cfg.unembedding_lr, "weight_decay": 0.0},
        {"params": others, "base_lr": cfg.lr, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    if cfg.optimizer == "adamw":
        adam_groups.append({"params": matrices, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay})
    adam_groups = [g for g in adam_groups if g["params"]]
    for g in adam_groups:
        g["lr"] = g["base_lr"]
    opts: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(adam_groups, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)
    ]
    if cfg.optimizer == "muon" and matrices:
        muon = Muon(
            matrices,
            lr=cfg.matrix_lr,
            momentum=cfg.muon_momentum,
            weight_decay=cfg.weight_decay,
            # fp32 runs stay fp32 throughout, so they are reproducible across process counts.
            ns_dtype=torch.bfloat16 if dtype == torch.bfloat16 else torch.float32,
        )
        for g in muon.param_groups:
            g["base_lr"] = cfg.matrix_lr
            g["muon"] = True
        opts.append(muon)
    return Optimizers(opts)


def muon_momentum(step: int, cfg: TrainConfig) -> float:
    """Momentum warms up from 0.85 to its target over the first steps (modded-nanogpt)."""
    if cfg.muon_momentum_warmup <= 0:
        return cfg.muon_momentum
    frac = min(1.0, step / cfg.muon_momentum_warmup)
    return (1 - frac) * 0.85 + frac * cfg.muon_momentum
