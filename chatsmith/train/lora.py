"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), switched in from outside.

`apply_lora` freezes a loaded model and changes the class of each targeted nn.Linear in place
to `LoRALinear`, which adds two small matrices: y = W x + b + (alpha / r) B A dropout(x), with
A (r, in) random and B (out, r) zero, so training starts from the base model exactly (PEFT's
initialisation). The network file stays plain; the parameter names (`q_proj.lora_A.weight`)
are PEFT's, so the saved adapter (checkpoint.save_adapter) loads onto the exported model with
`peft`. A stage's checkpoint is then only the adapter, and the DPO reference is the same
model with its adapters switched off (no second copy of the weights).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatsmith.checkpoint import ADAPTER_CONFIG, save_adapter, save_checkpoint, weights_fingerprint
from chatsmith.common.config import LoRAConfig
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info
from chatsmith.model.gpt import GPT
from chatsmith.tokenizer.bpe import BPETokenizer

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Linear):
    """nn.Linear plus a low-rank update; its own weight and bias stay frozen and keep their names."""

    lora_A: nn.Linear
    lora_B: nn.Linear

    def add_adapter(self, rank: int, alpha: float, dropout: float, gen: torch.Generator) -> None:
        dev = self.weight.device
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=dev)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=dev)
        with torch.no_grad():
            # PEFT's default: A as nn.Linear's kaiming-uniform init, B zero.
            bound = 1 / math.sqrt(self.in_features)
            a = torch.empty(self.lora_A.weight.shape).uniform_(-bound, bound, generator=gen)
            self.lora_A.weight.copy_(a)
            self.lora_B.weight.zero_()
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / rank
        self.lora_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.lora_enabled:
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class TokenRows(nn.Module):
    """New values for a few rows of the embedding (PEFT's trainable tokens: `trainable_tokens_delta`
    holds the rows themselves), for tokens the base never learned, such as added tool tags."""

    def __init__(self, weight: torch.Tensor, ids: list[int]) -> None:
        super().__init__()
        idx = torch.tensor(ids, dtype=torch.long, device=weight.device)
        self.register_buffer("ids", idx, persistent=False)
        self.trainable_tokens_delta = nn.Parameter(weight.detach()[self.ids].clone())
        self.enabled = True

    def weight(self, base: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return base
        return base.index_copy(0, self.ids, self.trainable_tokens_delta.to(base.dtype))


class RowsEmbedding(nn.Embedding):
    token_adapter: TokenRows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.token_adapter.weight(self.weight))


class RowsHead(nn.Linear):
    """A tied output head reads the same trained rows as the embedding, as PEFT ties them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.rows.weight(self.weight), self.bias)


def add_token_rows(model: GPT, tokens: list[int]) -> None:
    emb = model.embed_tokens
    emb.__class__ = RowsEmbedding
    emb.token_adapter = TokenRows(emb.weight, tokens)
    if model.cfg.tie_embeddings:
        model.lm_head.__class__ = RowsHead
        object.__setattr__(model.lm_head, "rows", emb.token_adapter)  # not a second submodule


def targets_of(lc: LoRAConfig) -> list[str]:
    names = [t.strip() for t in lc.targets.split(",") if t.strip()]
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
        raise ChatsmithError(f"lora.targets {bad or lc.targets!r}: choose among {', '.join(TARGETS)}")
    return names


def token_ids(tok: BPETokenizer, lc: LoRAConfig) -> list[int]:
    """lora.tokens (comma-separated token strings) as ids; each must be one token of the vocabulary."""
    names = [t.strip() for t in lc.tokens.split(",") if t.strip()]
    ids = [tok.tok.token_to_id(t) for t in names]
    bad = [n for n, i in zip(names, ids) if i is None]
    if bad:
        raise ChatsmithError(f"lora.tokens: {', '.join(bad)} not single tokens of this model's vocabulary")
    return sorted(set(ids))


def apply_lora(model: GPT, lc: LoRAConfig, base: Path, seed: int, tok: BPETokenizer | None = None) -> bool:
    """With lora.rank > 0: freeze the model and adapt lc.targets in every block; whether it did.

    `base` is the checkpoint the model was loaded from: the adapter's checkpoint names it. The
    rows of lora.tokens (new tokens such as tool tags) train too (PEFT's trainable tokens).
    """
    if lc.rank <= 0:
        return False
    targets = targets_of(lc)
    model.lora_base = {"path": str(Path(base).resolve()), "fingerprint": weights_fingerprint(model)}
    model.lora_config = lc
    model.lora_tokens = token_ids(tok, lc) if tok is not None else []
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    for block in model.layers:
        for m in (block.self_attn, block.mlp):
            for name in targets:
                lin = getattr(m, name, None)
                if isinstance(lin, nn.Linear):
                    lin.__class__ = LoRALinear
                    lin.add_adapter(lc.rank, lc.alpha, lc.dropout, gen)
    if model.lora_tokens:
        add_token_rows(model, model.lora_tokens)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info(
        f"[lora] rank {lc.rank}, alpha {lc.alpha:g} on {','.join(targets)}: {n / 1e6:.2f}M trainable "
        f"of {model.num_params() / 1e6:.1f}M parameters; base {base}"
    )
    return True


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """The base model for the duration: every adapter switched off, then back on."""
    mods = [m for m in model.modules() if isinstance(m, LoRALinear)]
    rows = [m for m in model.modules() if isinstance(m, TokenRows)]
    for m in mods:
        m.lora_enabled = False
    for r in rows:
        r.enabled = False
    try:
        yield
    finally:
        for m in mods:
            m.lora_enabled = True
        for r in rows:
            r.enabled = True


class BaseView:
    """Calls the model with its adapters off: the frozen base as DPO's or GRPO's reference."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, *args: Any, **kw: Any) -> Any:
        with adapters_off(self.model):
            return self.model(*args, **kw)


def reference_of(model: GPT) -> Any:
    """A frozen reference for preference or RL losses: the base under the adapters, else a copy."""
    if has_lora(model):
        return BaseView(model)
    import copy

    return copy.deepcopy(model).eval().requires_grad_(False)


def peft_config(gpt: GPT) -> dict[str, Any]:
    """adapter_config.json as `peft` writes it for this adapter (LoraConfig's fields)."""
    lc: LoRAConfig = gpt.lora_config
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": gpt.lora_base["path"],
        "r": lc.rank,
        "lora_alpha": lc.alpha,
        "lora_dropout": lc.dropout,
        "target_modules": targets_of(lc),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
        "trainable_token_indices": {"embed_tokens": gpt.lora_tokens} if gpt.lora_tokens else None,
    }


def save_stage(
    path: Path,
    gpt: GPT,
    tok: BPETokenizer,
    meta: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
    train_state: dict[str, Any] | None,
    state: dict[str, torch.Tensor],
) -> None:
    """A stage's checkpoint: the adapter alone (naming its base) when the model has one, else all."""
    if not has_lora(gpt):
        save_checkpoint(path, gpt, tok, meta, optimizer_state, train_state, state=state)
        return
    tensors = {k: v for k, v in state.items() if ".lora_A." in k or ".lora_B." in k or ".token_adapter." in k}
    base = {"base": gpt.lora_base["path"], "base_fingerprint": gpt.lora_base["fingerprint"]}
    save_adapter(path, tensors, peft_config(gpt), tok, {**meta, **base}, optimizer_state, train_state)


def load_stage_weights(path: Path, gpt: GPT) -> bool:
    """Resuming a LoRA stage: its adapter's tensors back into the model; False if not an adapter."""
    if not (Path(path) / ADAPTER_CONFIG).is_file() or not has_lora(gpt):
        return False
    from chatsmith.checkpoint import read_adapter

    _, tensors = read_adapter(Path(path))
    missing, unexpected = gpt.load_state_dict(tensors, strict=False)
    lora_missing = [k for k in missing if ".lora_" in k]
    if lora_missing or unexpected:
        first = (lora_missing or unexpected)[0]
        raise ChatsmithError(f"checkpoint {path}: its adapter does not fit this model ({first})")
    return True
