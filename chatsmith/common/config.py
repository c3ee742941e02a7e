"""Typed configuration: dataclasses with laptop-sized defaults, TOML presets, CLI overrides.

A preset is a TOML file in `configs/` whose tables mirror the dataclass fields
(`[model] depth = 4`). On the command line `--model.depth=6` overrides one value.
Unknown keys and values of the wrong type are a `ChatsmithError` naming the key and
what is allowed, never a silent default.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatsmith.common.errors import ChatsmithError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class RunConfig:
    name: str = "demo"  # the run folder under $CHATSMITH_HOME/runs
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | bfloat16
    threads: int = 0  # torch intra-op threads; 0: the cores other processes leave free (split among ranks)
    parallel: str = "auto"  # auto | ddp | fsdp: how torchrun's ranks share the model (auto: fsdp from 1B)


@dataclass
class IdentityConfig:
    name: str = "chatsmith"
    maker: str = "the chatsmith team"
    name_zh: str = "chatsmith"
    maker_zh: str = "chatsmith 团队"


@dataclass
class DataConfig:
    tokens: str = ""  # a token folder (`chatsmith data prepare`/`tokenize`) pretraining streams
    corpus: str = ""  # the demo's .txt/.md/.jsonl file or folder; empty = the Python stdlib's docstrings
    corpus_mb: float = 6.0  # megabytes of corpus text for pretraining
    val_fraction: float = 0.02  # documents held out for validation loss
    chat_train: int = 12000  # synthetic training conversations
    chat_val: int = 300  # synthetic conversations for SFT validation loss
    pretrain_chat_fraction: float = 0.1  # share of pretraining docs that are rendered conversations


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    train_mb: float = 4.0  # megabytes of corpus the BPE trainer sees


@dataclass
class ModelConfig:
    vocab_size: int = 0  # 0 = taken from the tokenizer
    depth: int = 4
    n_embd: int = 0  # 0 = depth * aspect_ratio, rounded to head_dim
    aspect_ratio: int = 64
    head_dim: int = 64
    n_head: int = 0  # 0 = n_embd // head_dim
    n_kv_head: int = 0  # 0 = n_head (no grouping)
    intermediate_size: int = 0  # 0 = 3 * n_embd (Qwen3's ratio), rounded to 64
    seq_len: int = 512  # the context length
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    tie_embeddings: bool = False


@dataclass
class TrainConfig:
    steps: int = 200
    batch_size: int = 16  # sequences per step
    seq_len: int = 256
    lr: float = 3e-3  # matrices of the transformer blocks
    embedding_lr: float = 0.1  # token embeddings (std 1 at init, so they need a large step; as nanochat)
    unembedding_lr: float = 3e-3  # lm_head
    min_lr_frac: float = 0.0  # final lr as a fraction of lr
    warmup_steps: int = 20
    warmdown_frac: float = 0.4  # final fraction of steps decaying linearly (WSD schedule)
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    ckpt_every: int = 0  # 0 = only at the end
    log_every: int = 10
    epochs: float = 0.0  # >0: steps = that many passes over the stage's rows (every stage, pretrain too)
    optimizer: str = "muon"  # muon (block matrices; AdamW for the rest) | adamw (everything)
    matrix_lr: float = 0.02  # Muon's rate for the block matrices (nanochat's default)
    muon_momentum: float = 0.95
    muon_momentum_warmup: int = 300  # steps over which Muon's momentum rises from 0.85
    total_batch_tokens: int = 0  # tokens per optimizer step, all ranks; 0 = batch_size*seq_len*ranks
    compile: str = "auto"  # auto | on | off: torch.compile the model (auto: on for CUDA, see loop.py)
    # Recompute each block's activations in the backward pass instead of keeping them: less
    # memory for a longer step (for models whose activations do not fit otherwise).
    gradient_checkpointing: bool = False


@dataclass
class EvalConfig:
    arithmetic: int = 200
    counting: int = 200
    identity: int = 40  # per language
    other: int = 50  # per smaller task
    base_limit: int = 30  # questions per task for the base model (it cannot chat yet)
    max_new_tokens: int = 96


@dataclass
class DPOConfig(TrainConfig):
    """Direct Preference Optimization (Rafailov et al. 2023) on preference pairs."""

    beta: float = 0.1  # strength of the implicit KL to the reference model
    train_pairs: int = 3000  # synthetic pairs for the demo (a --data file replaces them)
    val_pairs: int = 300  # held-out pairs for preference accuracy
    rpo_alpha: float = 0.0  # > 0 adds this x the chosen answers' SFT loss (TRL's rpo_alpha)
    guard_tolerance: float = 0.0  # > 0: stop when held-out loss rises this fraction (train/guard.py)


@dataclass
class RMConfig(TrainConfig):
    """A reward model: the chat model with a scalar head, Bradley-Terry pairwise loss."""

    pool: str = "mean"  # what the head reads: last (the closing <|im_end|>) | mean (the answer's tokens)
    train_pairs: int = 3000
    val_pairs: int = 300


@dataclass
class RLConfig(TrainConfig):
    """GRPO (Shao et al. 2024, DeepSeekMath): a group of sampled answers per prompt."""

    group_size: int = 8  # answers sampled per prompt; batch_size is prompts per step
    temperature: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64  # per assistant turn of a rollout
    clip_eps: float = 0.2  # PPO-style ratio clipping
    kl_coef: float = 0.0  # > 0 adds a KL penalty to the reference (SFT) model
    rm_weight: float = 0.0  # > 0 adds the reward model's score (needs a reward model)
    rm_path: str = ""  # reward model checkpoint; empty = <run>/rm when rm_weight > 0
    eval_problems: int = 200  # held-out problems for accuracy before and after (at most, from --data)
    pass_k: int = 8  # k of pass@k (from the sampled group; <= group_size)
    guard_tolerance: float = 0.0  # > 0: stop when held-out loss rises this fraction (train/guard.py)


@dataclass
class LoRAConfig:
    """Low-rank adapters (Hu et al. 2021) for sft, dpo and rl: rank 0 trains every weight instead."""

    rank: int = 0
    alpha: float = 16.0  # the update is scaled by alpha / rank, as PEFT does
    dropout: float = 0.0  # on the adapter's input only
    targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # Linear layers of each block
    tokens: str = ""  # comma-separated tokens whose embedding rows train too (e.g. added tool tags)


_POST: dict[str, Any] = {"optimizer": "adamw", "embedding_lr": 1e-4, "unembedding_lr": 1e-4, "eval_every": 50}


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, warmup_steps=10, optimizer="adamw"))
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Post-training moves the weights a little: one small AdamW rate for every group.
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(**_POST, steps=100, lr=1e-4, warmup_steps=10))
    rm: RMConfig = field(default_factory=lambda: RMConfig(**_POST, steps=100, lr=1e-4, warmup_steps=10))
    rl: RLConfig = field(
        default_factory=lambda: RLConfig(**_POST, steps=30, batch_size=8, lr=5e-5, warmup_steps=0)
    )
    lora: LoRAConfig = field(default_factory=LoRAConfig)


def presets_dir() -> Path:
    """`configs/` beside the package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parents[2] / "configs"


def available_presets() -> list[str]:
    d = presets_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a TOML or command-line value to the field's type, or explain why not."""
    if isinstance(typ, str):  # postponed annotations
        typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ChatsmithError(f"config key '{key}' expects a boolean (true or false), got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ChatsmithError(f"config key '{key}' expects an integer (int), got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ChatsmithError(f"config key '{key}' expects an integer (int), got {value!r}") from None
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise ChatsmithError(f"config key '{key}' expects a number (float), got {value!r}") from None
    if typ is str:
        # Command-line values are always strings; a TOML number, list or table here is a mistake.
        if not isinstance(value, str):
            raise ChatsmithError(f"config key '{key}' expects a string (str), got {value!r}")
        return value
    raise ChatsmithError(f"config key '{key}' has an unsupported type {typ!r}")


def _set(cfg: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    obj, prefix = cfg, []
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(obj)}
        if part not in names:
            where = ".".join(prefix) or "the top level"
            raise ChatsmithError(
                f"unknown config key '{dotted}': '{part}' is not in {where}; "
                f"allowed: {', '.join(sorted(names))}"
            )
        prefix.append(part)
        f = names[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(obj, part)):
                if value == {}:  # an empty TOML table such as a bare `[model]`
                    return
                raise ChatsmithError(f"config key '{dotted}' is a section; set one of its keys")
            hints = typing.get_type_hints(type(obj))
            setattr(obj, part, _coerce(value, hints.get(part, f.type), dotted))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ChatsmithError(f"config key '{dotted}': '{part}' is a value, not a section")


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in table.items():
        key = f"{prefix}{k}"
        # An empty table is kept as a value so that `[model.depth]` cannot vanish silently.
        out.extend(_flatten(v, key + ".") if isinstance(v, dict) and v else [(key, v)])
    return out


def load_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = presets_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        choices = ", ".join(available_presets()) or "none found"
        raise ChatsmithError(f"unknown preset '{name_or_path}'; available presets: {choices}")
    try:
        with path.open("rb") as f:  # TOML is UTF-8 whatever the locale says
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ChatsmithError(f"preset {path} is not valid TOML: {e}") from None


def parse_override(arg: str) -> tuple[str, str]:
    """`--model.depth=6` -> ("model.depth", "6")."""
    body = arg[2:] if arg.startswith("--") else arg
    if "=" not in body:
        raise ChatsmithError(f"override '{arg}' must look like --section.key=value")
    key, value = body.split("=", 1)
    return key, value


def make_config(preset: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the preset's values, then `--section.key=value` overrides."""
    cfg = Config()
    if preset:
        for key, value in _flatten(load_preset(preset)):
            try:
                _set(cfg, key, value)
            except ChatsmithError as e:
                raise ChatsmithError(f"preset '{preset}': {e}") from None
    for arg in overrides:
        _set(cfg, *parse_override(arg))
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass; keys it does not know are an error."""
    if not isinstance(data, dict):
        raise ChatsmithError(f"config data must be a table of sections, got {type(data).__name__}")
    obj = cls()
    for key, value in _flatten(data):
        _set(obj, key, value)
    return obj


__all__ = [
    "Config",
    "DPOConfig",
    "DataConfig",
    "EvalConfig",
    "IdentityConfig",
    "LoRAConfig",
    "ModelConfig",
    "RLConfig",
    "RMConfig",
    "RunConfig",
    "TokenizerConfig",
    "TrainConfig",
    "available_presets",
    "from_dict",
    "load_preset",
    "make_config",
    "parse_override",
    "presets_dir",
    "to_dict",
]
