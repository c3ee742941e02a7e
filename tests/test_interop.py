"""Hugging Face interop: exports load in transformers with chatsmith's logits, chat template
and greedy generations; Qwen3/Qwen2/Llama checkpoints import losslessly and round-trip;
what cannot be converted exactly is refused with the reason. Tiny random models, no downloads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from chatsmith.checkpoint import load_checkpoint, save_checkpoint
from chatsmith.common.errors import ChatsmithError
from chatsmith.engine.generate import generate_uncached
from chatsmith.interop import export_hf, export_main, export_refusals, import_main
from chatsmith.interop.hf_config import EXPORT_CHECKS
from chatsmith.interop.hf_export import QWEN2_SPLIT, qwen2_tokenizer_fits
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_conversation, encode_prompt, render
from chatsmith.tokenizer.special import BOS, IM_END, IM_START, REQUIRED_TOKENS, SPECIAL_TOKENS

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "人工智能領域知名科學家",
    "def add(a, b):\n\treturn a + b\n",
    "What is 37 * 41? Let me use the calculator.",
    "今天天气很好，我们去公园散步吧。 The answer is 1517.",
]
TOOL_CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are chatsmith."},
    {"role": "user", "content": "What is 37 * 41? 请用计算器。"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "37 * 41"}}}
        ],
    },
    {"role": "tool", "content": "1517"},
    {"role": "assistant", "content": "37 * 41 = 1517."},
]
PLAIN_CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Who are you? 你是谁？"},
    {"role": "assistant", "content": "I am chatsmith, 一个助手."},
    {"role": "user", "content": "How many r's are in strawberry?"},
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine spinning threads cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def hf():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach the Hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random and non-zero (norm weights around 1), so nothing passes by accident."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "norm" in name else 0.0))


@pytest.fixture(scope="module")
def qwen_tok(tiny_tok) -> BPETokenizer:
    """tiny_tok's vocabulary behind Qwen2's normaliser and split pattern, as a Qwen2 checkpoint has."""
    tk = Tokenizer.from_str(tiny_tok.tok.to_str())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok = BPETokenizer(tk)
    assert qwen2_tokenizer_fits(tok) and not qwen2_tokenizer_fits(tiny_tok)
    return tok


def ids_of(encoded: Any) -> list[int]:
    """apply_chat_template returns a BatchEncoding in transformers 5, a list before."""
    return list(encoded["input_ids"]) if hasattr(encoded, "keys") else list(encoded)


def hf_tensors(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def hf_greedy(hm: Any, prompt: list[int], n: int) -> list[int]:
    x = torch.tensor([prompt])
    out = hm.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt) :].tolist()


def greedy_until_stop(model: GPT, prompt: list[int], n: int, stops: set[int]) -> list[int]:
    new = generate_uncached(model, prompt, n)
    for i, t in enumerate(new):
        if t in stops:
            return new[: i + 1]
    return new


# ---- 1. export ---------------------------------------------------------------------------------
EXPORT_CASES = {
    # name: (GPTConfig overrides, Qwen2-style tokenizer?, expected architecture, max_shard_size)
    "qwen3-gqa-untied": (dict(n_kv_head=2), False, "Qwen3ForCausalLM", None),
    "qwen3-mha-tied-sharded": (dict(n_kv_head=4, tie_embeddings=True), False, "Qwen3ForCausalLM", "40KB"),
    "qwen3-gqa-tied-bias": (dict(tie_embeddings=True, qkv_bias=True), False, "Qwen3ForCausalLM", None),
    "llama-gqa": (dict(qk_norm=False), False, "LlamaForCausalLM", None),
    # q/k/v biases with our GPT-4 split: transformers 5 would re-split a qwen2 tokenizer.
    "llama-gqa-bias": (dict(qk_norm=False, qkv_bias=True), False, "LlamaForCausalLM", None),
    "qwen2-gqa-bias": (dict(qk_norm=False, qkv_bias=True), True, "Qwen2ForCausalLM", None),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_loads_in_transformers_and_matches_chatsmith(
    hf, tiny_tok, qwen_tok, tmp_path: Path, case: str
) -> None:
    overrides, qwen_style, arch, shard = EXPORT_CASES[case]
    tok = qwen_tok if qwen_style else tiny_tok
    # 40 rows beyond the tokenizer, as a model padded for speed would have.
    base = dict(
        vocab_size=tok.vocab_size + 40,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=128,
        seq_len=256,
        rope_theta=5000.0,
    )
    cfg = GPTConfig(**{**base, **overrides})
    model = build_model(cfg, seed=0)
    randomize(model, seed=1)
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, tok, {"stage": "sft", "step": 1})
    out = tmp_path / "hf"
    export_main(str(tmp_path / "ckpt"), "hf", str(out), **({"max_shard_size": shard} if shard else {}))

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [arch] and config["tie_word_embeddings"] == cfg.tie_embeddings
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 5000.0  # 4.x and 5.x keys
    # Qwen3 and Llama carry q/k/v biases with attention_bias (plus a zero o_proj bias); Qwen2 always.
    assert config.get("attention_bias", False) == (cfg.qkv_bias and arch != "Qwen2ForCausalLM")
    gen_cfg = json.loads((out / "generation_config.json").read_text())
    stops = {tok.im_end_id, tok.token_id(BOS)}
    assert set(gen_cfg["eos_token_id"]) == stops and gen_cfg["eos_token_id"][0] == tok.im_end_id
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert (tok_cfg["eos_token"], tok_cfg["pad_token"], tok_cfg["bos_token"]) == ("<|im_end|>", BOS, None)
    added = {t["content"]: t["special"] for t in tok_cfg["added_tokens_decoder"].values()}
    assert added == {t: t in (BOS, IM_START, IM_END) for t in SPECIAL_TOKENS}  # tool tags are text, as Qwen's
    if shard:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()

    hm, info = hf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert type(hm).__name__ == arch
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    hm.eval()
    ht = hf.AutoTokenizer.from_pretrained(out)

    # Tokenizer and logits.
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok.encode(text)
            assert ht(text, add_special_tokens=False)["input_ids"] == ids
            x = torch.tensor([ids])
            ours, theirs = model(x), hm(x).logits.float()
            assert ours.abs().max() > 0.1  # a real signal, not a near-zero output
            torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    # Chat template: token for token what chatsmith trains on and prompts with.
    for conv in (TOOL_CONVERSATION, PLAIN_CONVERSATION):
        assert ht.apply_chat_template(conv, tokenize=False) == render(conv)[0]
        assert ids_of(ht.apply_chat_template(conv, tokenize=True)) == encode_conversation(tok, conv)[0]
        assert ids_of(
            ht.apply_chat_template(conv, tokenize=True, add_generation_prompt=True)
        ) == encode_prompt(tok, conv)

    # Decoding as vLLM does by default (skip_special_tokens) keeps the tool call for the hermes parser.
    text = ht.decode(encode_conversation(tok, TOOL_CONVERSATION)[0], skip_special_tokens=True)
    assert '<tool_call>\n{"name": "calculator"' in text and IM_START not in text

    # Greedy generation: all 20 tokens alike; and transformers stops where generation_config says.
    prompts = [encode_prompt(tok, conv) for conv in (TOOL_CONVERSATION[:2], PLAIN_CONVERSATION)]
    for prompt in prompts:
        stopped = hf_greedy(hm, prompt, 20)
        assert stopped == greedy_until_stop(model, prompt, 20, stops)
    hm.generation_config.eos_token_id = None
    for prompt in prompts:
        full = hf_greedy(hm, prompt, 20)
        assert len(full) == 20 and full == generate_uncached(model, prompt, 20)

    # And the export imports back into the very same network.
    import_main(str(out), str(tmp_path / "back"))
    back, back_tok, meta = load_checkpoint(tmp_path / "back")
    assert back.cfg == cfg and back_tok.tok.get_vocab() == tok.tok.get_vocab() and meta["added_tokens"] == {}
    assert back_tok.encode(render(TOOL_CONVERSATION)[0]) == encode_conversation(tok, TOOL_CONVERSATION)[0]
    x = torch.tensor([tok.encode(PROMPTS[1])])
    assert torch.equal(back(x), model(x))


# ---- 2. import ---------------------------------------------------------------------------------
def llama_style_tokenizer(texts: list[str]) -> Tokenizer:
    """A byte-level BPE with its own specials and none of ChatML's: the added-token path."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(texts, trainer=trainer)
    return tk


IMPORT_CASES = {
    # name: (config class, extra config, tokenizer, tied, save_pretrained max_shard_size)
    "qwen3-tied": ("Qwen3Config", dict(head_dim=16), "chatml", True, None),
    "qwen2-sharded": ("Qwen2Config", dict(), "qwen2", False, "50KB"),
    "llama-added-tokens": ("LlamaConfig", dict(head_dim=16), "llama", False, None),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_matches_transformers_and_round_trips(
    hf, tiny_tok, qwen_tok, tiny_corpus_texts, tmp_path: Path, case: str
) -> None:
    cls, extra, tokenizer, tied, shard = IMPORT_CASES[case]
    chatml = tokenizer != "llama"  # a Qwen tokenizer has the ChatML and tool tokens
    if chatml:
        tk = Tokenizer.from_str((qwen_tok if tokenizer == "qwen2" else tiny_tok).tok.to_str())
    else:
        tk = llama_style_tokenizer(tiny_corpus_texts)
    n_tok = tk.get_vocab_size()
    rows = n_tok + 16 if chatml else n_tok  # Qwen pads its embedding beyond the tokenizer
    hcfg = getattr(hf, cls)(
        vocab_size=rows,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=5000.0,
        tie_word_embeddings=tied,
        **extra,
    )
    torch.manual_seed(0)
    hm = hf.AutoModelForCausalLM.from_config(hcfg)
    randomize(hm, seed=2)
    hm.eval()
    src = tmp_path / "src"
    hm.save_pretrained(src, **({"max_shard_size": shard} if shard else {}))
    tk.save(str(src / "tokenizer.json"))
    if shard:
        assert (src / "model.safetensors.index.json").is_file()

    # The tool tags are added as tokens only when asked (and the model has none).
    import_main(str(src), str(tmp_path / "ckpt"), add_tool_tokens=not chatml)
    model, tok, meta = load_checkpoint(tmp_path / "ckpt")
    if not chatml:
        import_main(str(src), str(tmp_path / "plain"))
        plain = json.loads((tmp_path / "plain" / "meta.json").read_text())["added_tokens"]
        assert list(plain) == REQUIRED_TOKENS
        plain_tok = BPETokenizer.load(tmp_path / "plain")
        assert plain_tok.tok.token_to_id("<tool_call>") is None  # the tags are text there
        assert "<tool_call>" in plain_tok.decode(encode_prompt(plain_tok, TOOL_CONVERSATION))
    assert meta["source"]["architecture"] == cls.replace("Config", "ForCausalLM")
    assert (model.lm_head.weight is model.embed_tokens.weight) == tied
    if chatml:
        assert meta["added_tokens"] == {} and model.cfg.vocab_size == rows
    else:
        assert set(meta["added_tokens"]) == set(SPECIAL_TOKENS) and model.cfg.vocab_size == rows + 7
        for w in (model.embed_tokens.weight, model.lm_head.weight):
            torch.testing.assert_close(w[rows:], w[:rows].mean(0, keepdim=True).expand(7, -1))
        assert IM_START in tok.decode(encode_prompt(tok, PLAIN_CONVERSATION))  # chat works on it

    with torch.no_grad():
        for text in PROMPTS:
            ids = tk.encode(text, add_special_tokens=False).ids
            assert tok.encode(text) == ids
            x = torch.tensor([ids])
            ours, theirs = model(x)[..., :rows], hm(x).logits.float()
            assert theirs.abs().max() > 0.1
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    # export(import(x)) has x's tensors: same names, same values (plus the added rows).
    export_main(str(tmp_path / "ckpt"), "hf", str(tmp_path / "back"))
    before, after = hf_tensors(src), hf_tensors(tmp_path / "back")
    assert sorted(before) == sorted(after)
    for name, t in before.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight") and not chatml:
            assert after[name].shape == (rows + 7, t.size(1))
            assert torch.equal(after[name][:rows], t), name
        else:
            assert after[name].dtype == t.dtype and torch.equal(after[name], t), name
    cfg_before = json.loads((src / "config.json").read_text())
    cfg_after = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("architectures", "hidden_size", "num_key_value_heads", "tie_word_embeddings", "rms_norm_eps"):
        assert cfg_after[key] == cfg_before[key], key


# ---- 3. refusals -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tiny_tok, tmp_path_factory) -> Path:
    """A small valid Hugging Face folder (Qwen3, sharded) to damage in the refusal tests."""
    cfg = GPTConfig(
        vocab_size=tiny_tok.vocab_size,
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_kv_head=1,
        head_dim=16,
        intermediate_size=64,
        seq_len=64,
    )
    out = tmp_path_factory.mktemp("refusals") / "hf"
    return export_hf(build_model(cfg, seed=0), tiny_tok, out, max_shard_size="20KB")


def _copy(src: Path, dst: Path, **config_changes: Any) -> Path:
    """A copy of src with config.json keys changed (None: removed)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config_changes)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


REFUSED_CONFIGS = {
    "gpt2": (dict(architectures=["GPT2LMHeadModel"], model_type="gpt2"), "GPT2LMHeadModel"),
    "yarn": (
        dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
        "yarn",
    ),
    "yarn-v5": (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), "yarn"),
    "llama3-rope": (dict(rope_scaling={"type": "llama3", "factor": 8.0}), "llama3"),
    "sliding": (dict(use_sliding_window=True, sliding_window=16), "sliding"),
    "gelu": (dict(hidden_act="gelu"), "hidden_act"),
    "attention-bias-without-biases": (dict(attention_bias=True), "missing .*q_proj.bias"),
    "quantized": (dict(quantization_config={"quant_method": "awq"}), "quantized"),
    "qwen2-no-biases": (dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2"), "q_proj.bias"),
}


@pytest.mark.parametrize("case", list(REFUSED_CONFIGS))
def test_unsupported_configs_are_refused_with_the_reason(exported: Path, tmp_path: Path, case: str) -> None:
    changes, reason = REFUSED_CONFIGS[case]
    src = _copy(exported, tmp_path / "src", **changes)
    with pytest.raises(ChatsmithError, match=reason):
        import_main(str(src), str(tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt").exists()


def test_classic_rope_keys_import(exported: Path, tmp_path: Path) -> None:
    """Configs written before transformers 5 have rope_theta (and rope_scaling: null) only."""
    src = _copy(exported, tmp_path / "src", rope_parameters=None, rope_theta=123.0, rope_scaling=None)
    assert "rope_parameters" not in json.loads((src / "config.json").read_text())
    import_main(str(src), str(tmp_path / "ckpt"))
    assert load_checkpoint(tmp_path / "ckpt")[0].cfg.rope_theta == 123.0


def test_a_non_zero_o_proj_bias_is_refused(exported: Path, tmp_path: Path) -> None:
    """attention_bias biases o_proj too; chatsmith imports it only where that bias is zero."""
    src = _copy(exported, tmp_path / "src", attention_bias=True)
    state = hf_tensors(src)
    for f in src.glob("model*.safetensors*"):
        f.unlink()
    for name in [k for k in state if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]:
        state[name.replace(".weight", ".bias")] = torch.zeros(state[name].size(0))
    state["model.layers.0.self_attn.o_proj.bias"] = torch.full((32,), 0.5)
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ChatsmithError, match=r"o_proj\.bias is not zero"):
        import_main(str(src), str(tmp_path / "ckpt"))
    state["model.layers.0.self_attn.o_proj.bias"].zero_()  # zero: the same network, imported
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    import_main(str(src), str(tmp_path / "ckpt"))
    assert load_checkpoint(tmp_path / "ckpt")[0].cfg.qkv_bias


@pytest.mark.parametrize("damage", ["no-weights", "missing-shard", "no-tokenizer", "no-config"])
def test_missing_files_are_refused(exported: Path, tmp_path: Path, damage: str) -> None:
    src = _copy(exported, tmp_path / "src")
    if damage == "no-weights":
        for f in src.glob("model*.safetensors*"):
            f.unlink()
        reason = "no model.safetensors"
    elif damage == "missing-shard":
        sorted(src.glob("model-*.safetensors"))[1].unlink()
        reason = "shards missing: model-00002"
    elif damage == "no-tokenizer":
        (src / "tokenizer.json").unlink()
        reason = "tokenizer.json"
    else:
        (src / "config.json").unlink()
        reason = "config.json"
    with pytest.raises(ChatsmithError, match=reason):
        import_main(str(src), str(tmp_path / "ckpt"))


def test_export_refuses_non_exportable_models_and_bad_arguments(
    tiny_tok, exported: Path, tmp_path: Path, monkeypatch
) -> None:
    base = dict(
        vocab_size=tiny_tok.vocab_size,
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_kv_head=1,
        head_dim=16,
        intermediate_size=64,
        seq_len=64,
    )
    assert export_refusals(GPTConfig(**base)) == []
    # Every flag chatsmith has today exports; a flag that leaves the families plugs a check in.
    softcap = lambda c: "logit softcap is not in Qwen3" if c.rms_eps > 1e-3 else None  # noqa: E731
    monkeypatch.setattr("chatsmith.interop.hf_config.EXPORT_CHECKS", [*EXPORT_CHECKS, softcap])
    assert export_refusals(GPTConfig(**base, rms_eps=0.01)) == ["logit softcap is not in Qwen3"]
    bad = build_model(GPTConfig(**base, rms_eps=0.01), seed=0)
    save_checkpoint(tmp_path / "bad", bad, tiny_tok, {"step": 0})
    with pytest.raises(ChatsmithError, match=r"cannot be exported.*logit softcap"):
        export_main(str(tmp_path / "bad"), "hf", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    good = build_model(GPTConfig(**base), seed=0)
    save_checkpoint(tmp_path / "good", good, tiny_tok, {"step": 0})
    with pytest.raises(ChatsmithError, match="unknown export format 'onnx'"):
        export_main(str(tmp_path / "good"), "onnx", str(tmp_path / "out"))
    with pytest.raises(ChatsmithError, match="not an empty folder"):
        export_main(str(tmp_path / "good"), "hf", str(exported))
    with pytest.raises(ChatsmithError, match="not an empty folder"):
        import_main(str(exported), str(tmp_path / "good"))


def test_bfloat16_checkpoints_export_in_bfloat16_and_old_configs_still_load(tiny_tok, tmp_path: Path) -> None:
    cfg = GPTConfig(
        vocab_size=tiny_tok.vocab_size,
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_kv_head=1,
        head_dim=16,
        intermediate_size=64,
        seq_len=64,
    )
    model = build_model(cfg, seed=0).to(torch.bfloat16)
    save_checkpoint(tmp_path / "c", model, tiny_tok, {"step": 0})
    # A config.json written before qk_norm/qkv_bias existed loads with today's defaults.
    conf = json.loads((tmp_path / "c" / "config.json").read_text())
    for key in ("qk_norm", "qkv_bias"):
        del conf["model"][key]
    (tmp_path / "c" / "config.json").write_text(json.dumps(conf))
    loaded, _, _ = load_checkpoint(tmp_path / "c")
    assert loaded.cfg.qk_norm and not loaded.cfg.qkv_bias
    export_main(str(tmp_path / "c"), "hf", str(tmp_path / "hf"))
    state = hf_tensors(tmp_path / "hf")
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert torch.equal(state["model.embed_tokens.weight"], model.embed_tokens.weight)
