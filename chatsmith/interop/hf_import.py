"""Import a local Hugging Face checkpoint (Qwen3, Qwen2 or Llama) as a chatsmith checkpoint.

Reads config.json, model.safetensors (single or sharded with its index) and tokenizer.json;
writes the folder `chatsmith.checkpoint.save_checkpoint` writes, so chat, sft and the
rest load it with `load_checkpoint`. Anything chatsmith's network cannot reproduce
exactly (see hf_config.from_hf_config) is refused with the reason.

A tokenizer without the ChatML tokens (Llama's) gets them added, and chatsmith's tool tags
too when asked and the model has none (otherwise they stay text); their embedding and lm_head
rows start at the mean of the existing rows (so nothing is favoured before fine-tuning), and
the original vocabulary's rows, hence its logits, stay as they were. The model's own
tokenizer_config.json (chat template, special tokens) and generation_config.json travel with
the checkpoint, so chat and serve render as the model expects and export writes them back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import AddedToken, Tokenizer

from chatsmith.checkpoint import save_checkpoint
from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.interop.hf_config import from_hf_config, from_hf_name, to_hf_name
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.special import REQUIRED_TOKENS, TOOL_TOKENS


def read_config(src: Path) -> dict[str, Any]:
    p = src / "config.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ChatsmithError(f"{src} has no config.json; is it a Hugging Face model folder?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ChatsmithError(f"cannot read {p} ({e})") from None


def read_weights(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors, or of the shards model.safetensors.index.json lists."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ChatsmithError(f"cannot read {index} ({e})") from None
        missing = [f for f in files if not (src / f).is_file()]
        if missing:
            raise ChatsmithError(f"{src}: safetensors shards missing: {', '.join(missing)}")
    elif (src / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        bins = any(src.glob("pytorch_model*.bin"))
        hint = " (pytorch_model.bin is not read: save with safetensors)" if bins else ""
        raise ChatsmithError(f"{src} has no model.safetensors or model.safetensors.index.json{hint}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(src / f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise ChatsmithError(f"{src / f} is corrupted ({e})") from None
    return state


def add_missing_tokens(tk: Tokenizer, add_tool_tokens: bool) -> dict[str, int]:
    """Add the ChatML tokens the tokenizer lacks, and the tool tags if asked and it has none of
    them; returns those added (token -> id)."""
    missing = [s for s in REQUIRED_TOKENS if tk.token_to_id(s) is None]
    if add_tool_tokens and all(tk.token_to_id(s) is None for s in TOOL_TOKENS):
        missing += TOOL_TOKENS
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in missing])
    return {s: tk.token_to_id(s) for s in missing}


def read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError) as e:
        raise ChatsmithError(f"cannot read {p} ({e})") from None


def read_tokenizer(src: Path, add_tool_tokens: bool = False) -> tuple[Tokenizer, dict[str, int]]:
    """The tokenizer with the chatsmith special tokens it needs added, and those added (token -> id)."""
    p = src / "tokenizer.json"
    if not p.is_file():
        raise ChatsmithError(f"{src} has no tokenizer.json (a slow tokenizer's tokenizer.model is not read)")
    try:
        tk = Tokenizer.from_file(str(p))
    except Exception as e:  # the library raises plain Exceptions on bad JSON
        raise ChatsmithError(f"cannot read {p}: {e}") from None
    return tk, add_missing_tokens(tk, add_tool_tokens)


def chatsmith_state(hf: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face names -> ours, checked against the network cfg describes."""
    state = {from_hf_name(k): v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}
    # attention_bias (Qwen3, Llama) biases o_proj as well; chatsmith has no such bias, so
    # only zero ones (as chatsmith's own exports write) can be dropped without a change.
    for name in [k for k in state if k.endswith("self_attn.o_proj.bias")]:
        if state.pop(name).any():
            raise ChatsmithError(f"{to_hf_name(name)} is not zero: an o_proj bias is not supported")
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # some tied checkpoints store a copy; one tensor is used
    with torch.device("meta"):
        expected = set(GPT(cfg).state_dict())
    if cfg.tie_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    problems = [
        f"{what} {', '.join(names[:5])}"
        for what, names in (("missing", missing), ("unexpected", unexpected))
        if names
    ]
    if problems:
        raise ChatsmithError("weights do not match config.json: " + "; ".join(problems))
    dtype = state["embed_tokens.weight"].dtype
    return {k: v.to(dtype) for k, v in state.items()}


def add_token_rows(
    state: dict[str, torch.Tensor], cfg: GPTConfig, added: dict[str, int], n_orig: int, vocab: int
) -> GPTConfig:
    """Rows for added tokens (growing the matrices to `vocab` rows if needed) = mean of the original rows."""
    rows = state["embed_tokens.weight"].size(0)
    new_rows = max(rows, vocab)
    ids = list(added.values())
    for name in ["embed_tokens.weight"] + ([] if cfg.tie_embeddings else ["lm_head.weight"]):
        w = state[name]
        mean = w[: min(n_orig, rows)].float().mean(0, keepdim=True).to(w.dtype)  # (1, C)
        w = torch.cat([w, mean.expand(new_rows - rows, -1)]) if new_rows > rows else w.clone()
        w[ids] = mean
        state[name] = w
    return dataclasses.replace(cfg, vocab_size=new_rows)


def build(cfg: GPTConfig, state: dict[str, torch.Tensor]) -> GPT:
    """The network holding these very tensors (no copy: built on meta, then assigned)."""
    with torch.device("meta"):
        model = GPT(cfg)
    if cfg.tie_embeddings:
        state = {**state, "lm_head.weight": state["embed_tokens.weight"]}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise ChatsmithError(f"weights do not match config.json ({detail})") from None
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model


def import_hf(src_dir: str | Path, out_dir: str | Path, add_tool_tokens: bool = False) -> Path:
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise ChatsmithError(f"no Hugging Face model folder at {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ChatsmithError(f"{out} exists and is not an empty folder; remove it or choose another")
    cfg, arch = from_hf_config(read_config(src))
    tk, added = read_tokenizer(src, add_tool_tokens)
    state = chatsmith_state(read_weights(src), cfg)
    rows = cfg.vocab_size
    n_orig = tk.get_vocab_size() - len(added)
    if added or tk.get_vocab_size() > rows:
        cfg = add_token_rows(state, cfg, added, n_orig, tk.get_vocab_size())
    model = build(cfg, state)
    meta = {
        "stage": "import",
        "step": 0,
        "source": {"path": str(src.resolve()), "architecture": arch},
        "added_tokens": added,
        "added_rows": cfg.vocab_size - rows,
    }
    if out.exists():
        out.rmdir()
    tok_cfg, gen_cfg = read_json(src / "tokenizer_config.json"), read_json(src / "generation_config.json")
    jinja = src / "chat_template.jinja"  # where transformers >= 4.56 saves the template
    if tok_cfg is not None and jinja.is_file() and not tok_cfg.get("chat_template"):
        tok_cfg["chat_template"] = jinja.read_text()
    tok = BPETokenizer(tk, tok_cfg, gen_cfg)
    save_checkpoint(out, model, tok, meta)
    return out


def import_hf_main(src_dir: str, out_dir: str, add_tool_tokens: bool = False) -> None:
    out = import_hf(src_dir, out_dir, add_tool_tokens)
    meta = json.loads((out / "meta.json").read_text())
    note = f"; added tokens {', '.join(meta['added_tokens'])}" if meta["added_tokens"] else ""
    log.info(f"imported {src_dir} ({meta['source']['architecture']}) to {out}{note}")
