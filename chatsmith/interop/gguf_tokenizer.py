"""GGUF tokenizer metadata (tokenizer.ggml.*) <-> a `tokenizers` byte-level BPE plus the
model's tokenizer_config.json and generation_config.json.

GGUF names the pre-tokenizer (`tokenizer.ggml.pre`) instead of storing its regex; llama.cpp's
src/llama-vocab.cpp maps each name to its split rules. Only the names below are rebuilt: an
unknown one is refused rather than guessed, since a wrong split changes every token.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from chatsmith.common.errors import ChatsmithError
from chatsmith.tokenizer.special import SPLIT_PATTERN

# llama.cpp's LLAMA3 regex (also its dbrx/smaug-bpe); the same splits as chatsmith's GPT-4
# pattern, written without possessive quantifiers.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# transformers' Qwen2Tokenizer PRETOKENIZE_REGEX (llama.cpp's QWEN2 regex).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# name -> (split regex or None for GPT-2's own ByteLevel regex, digits one by one, NFC, ignore_merges)
PRE: dict[str, tuple[str | None, bool, bool, bool]] = {
    "llama-bpe": (LLAMA3_SPLIT, False, False, True),  # llama.cpp sets ignore_merges for LLAMA3
    "llama3": (LLAMA3_SPLIT, False, False, True),
    "dbrx": (LLAMA3_SPLIT, False, False, False),
    "smaug-bpe": (LLAMA3_SPLIT, False, False, False),
    "qwen2": (QWEN2_SPLIT, False, True, False),
    "deepseek-r1-qwen": (QWEN2_SPLIT, False, True, False),
    "smollm": (None, True, False, False),  # HF SmolLM2: Digits(individual) + ByteLevel(use_regex)
    "gpt-2": (None, False, False, False),
}
# GGUF token types (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED = 1, 2, 3, 4, 5


def build_pipeline(tk: Tokenizer, pre: str) -> None:
    split, digits, nfc, _ = PRE[pre]
    if split is not None:
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True))
        tk.pre_tokenizer = pre_tokenizers.Sequence(steps)
    if nfc:
        tk.normalizer = normalizers.NFC()
    tk.decoder = decoders.ByteLevel()


def tokenizer_from_gguf(meta: dict[str, Any]) -> tuple[Tokenizer, int]:
    """The tokenizer, and the number of its real tokens (trailing padding ones dropped)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ChatsmithError(
            f"tokenizer.ggml.model {kind!r} is not supported; chatsmith reads byte-level BPE ('gpt2') only"
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE:
        raise ChatsmithError(f"pre-tokenizer {pre!r} is not supported; known: {', '.join(sorted(PRE))}")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    n = len(tokens)
    while n and types[n - 1] == UNUSED:  # rows padded for speed, with [PAD{i}] names
        n -= 1
    vocab = {t: i for i, t in enumerate(tokens[:n])}
    if len(vocab) != n:
        raise ChatsmithError("the GGUF vocabulary has duplicate tokens")
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    tk = Tokenizer(models.BPE(vocab, merges, ignore_merges=PRE[pre][3]))
    build_pipeline(tk, pre)
    # Control tokens (<|im_end|>) are special; user-defined ones (<think>) are matched whole but
    # are text, as transformers' GGUF loader and llama.cpp treat them.
    control = [AddedToken(tokens[i], special=True, normalized=False) for i in range(n) if types[i] == CONTROL]
    user = [AddedToken(tokens[i], normalized=False) for i in range(n) if types[i] == USER_DEFINED]
    tk.add_special_tokens(control)
    tk.add_tokens(user)
    return tk, n


def _tok(tokens: list[str], meta: dict[str, Any], key: str) -> str | None:
    i = meta.get(f"tokenizer.ggml.{key}_token_id")
    return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None


def configs_from_gguf(meta: dict[str, Any], tk: Tokenizer, seq_len: int) -> tuple[dict, dict]:
    """tokenizer_config.json and generation_config.json as transformers would write them."""
    tokens = list(meta["tokenizer.ggml.tokens"])
    added = {
        str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": t.special}
        for i, t in sorted(tk.get_added_tokens_decoder().items())
    }
    config: dict[str, Any] = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": _tok(tokens, meta, "bos"),
        "clean_up_tokenization_spaces": False,
        "eos_token": _tok(tokens, meta, "eos"),
        "model_max_length": seq_len,
        "pad_token": _tok(tokens, meta, "padding"),
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": _tok(tokens, meta, "unknown"),
    }
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    gen: dict[str, Any] = {}
    for key, name in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
        if isinstance(meta.get(f"tokenizer.ggml.{key}_token_id"), int):
            gen[name] = meta[f"tokenizer.ggml.{key}_token_id"]
    sampling = {"temp": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                "penalty_repeat": "repetition_penalty"}
    for key, name in sampling.items():
        if f"general.sampling.{key}" in meta:
            gen[name] = meta[f"general.sampling.{key}"]
            gen["do_sample"] = True
    return config, gen


def pre_name(tk: Tokenizer) -> str:
    """The llama.cpp pre-tokenizer name that splits as this tokenizer does (or a ChatsmithError)."""
    spec = json.loads(tk.to_str())
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    types = [s.get("type") for s in steps]
    nfc = (spec.get("normalizer") or {}).get("type") == "NFC"
    ignore = bool(spec["model"].get("ignore_merges"))
    if types == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split = (steps[0].get("pattern") or {}).get("Regex")
        if split in (SPLIT_PATTERN, LLAMA3_SPLIT) and not nfc:
            return "llama-bpe" if ignore else "dbrx"
        if split == QWEN2_SPLIT and not ignore:
            return "qwen2"
    if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex"):
        return "smollm"
    if types == ["ByteLevel"] and steps[0].get("use_regex"):
        return "gpt-2"
    raise ChatsmithError(
        "this tokenizer's pre-tokenizer has no llama.cpp equivalent; GGUF export needs GPT-4/Llama-3, "
        "Qwen2, SmolLM or GPT-2 splitting"
    )
