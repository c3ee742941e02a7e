"""LoRA: adapters in PEFT's format that `peft` loads onto the exported model with chatsmith's
logits, merged exports equal to serving the adapter, LoRA SFT that leaves the base's bytes
alone, the base as the reference with adapters off, and one clear error for an adapter
that belongs to another base. Tiny random models, no downloads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chatsmith.checkpoint import is_adapter, load_checkpoint, save_checkpoint
from chatsmith.cli import main
from chatsmith.common.config import Config, LoRAConfig
from chatsmith.common.log import MetricsLog
from chatsmith.interop import export_hf
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.checkpointing import enable_checkpointing
from chatsmith.train.lora import LoRALinear, adapters_off, apply_lora, reference_of, save_stage

PROMPT = "What is 37 * 41? 请用计算器。 The quick brown fox."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(vocab: int, **kw) -> GPTConfig:
    base = dict(vocab_size=vocab, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, head_dim=16,
                intermediate_size=128, seq_len=64)
    return GPTConfig(**{**base, **kw})


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int, only: str = "") -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if only in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "norm" in name else 0.0))


def make_base(tok: BPETokenizer, path: Path, seed: int, **kw) -> GPT:
    model = build_model(tiny_cfg(tok.vocab_size, **kw), seed=seed)
    randomize(model, seed)
    save_checkpoint(path, model, tok, {"stage": "base"})
    return model


def adapted(tok: BPETokenizer, base_dir: Path, rank: int = 4) -> GPT:
    """The base with LoRA on every target, its adapters random (B too, so they change the logits)."""
    model, _, _ = load_checkpoint(base_dir)
    apply_lora(model, LoRAConfig(rank=rank, alpha=8.0), base_dir, seed=0)
    randomize(model, 7, only="lora_")
    return model


def save_adapter_dir(model: GPT, tok: BPETokenizer, out: Path) -> Path:
    save_stage(out, model, tok, {"stage": "sft"}, None, None, model.state_dict())
    return out


def logits(model: GPT, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


@pytest.fixture(scope="module")
def hf():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="module")
def setup(tiny_tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    make_base(tiny_tok, root / "base", seed=1)
    model = adapted(tiny_tok, root / "base")
    save_adapter_dir(model, tiny_tok, root / "adapter")
    return root, model


def test_peft_loads_the_adapter_onto_the_exported_base_with_equal_logits(setup, tiny_tok, hf) -> None:
    import peft

    root, model = setup
    base, _, _ = load_checkpoint(root / "base")
    export_hf(base, tiny_tok, root / "base-hf")
    hm = hf.AutoModelForCausalLM.from_pretrained(root / "base-hf", dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(hm, root / "adapter").eval()
    # Every tensor of the file is one peft expects, and peft's own save names them the same.
    ours = set(load_file(str(root / "adapter" / "adapter_model.safetensors")))
    assert ours == set(peft.get_peft_model_state_dict(pm, save_embedding_layers=False))
    ids = tiny_tok.encode(PROMPT)
    with torch.no_grad():
        got = pm(torch.tensor([ids])).logits[0].float()
    want = logits(model, ids)
    assert (got - want).abs().max() < 1e-4
    assert (want - logits(base, ids)).abs().max() > 1e-2  # the adapter does change the logits


def test_trained_token_rows_load_in_peft_on_a_tied_model(tiny_tok, hf, tmp_path) -> None:
    """New tokens (tool tags) train their embedding rows, which a tied head reads too (PEFT's
    trainable_token_indices): peft gives the same logits, and so does the merged model."""
    import peft

    make_base(tiny_tok, tmp_path / "base", seed=4, tie_embeddings=True)
    model, _, _ = load_checkpoint(tmp_path / "base")
    lc = LoRAConfig(rank=2, alpha=4.0, targets="q_proj,v_proj", tokens="<tool_call>,</tool_call>")
    apply_lora(model, lc, tmp_path / "base", seed=0, tok=tiny_tok)
    randomize(model, 9, only="lora_")
    randomize(model, 10, only="token_adapter")
    save_adapter_dir(model, tiny_tok, tmp_path / "adapter")
    base, _, _ = load_checkpoint(tmp_path / "base")
    export_hf(base, tiny_tok, tmp_path / "base-hf")
    hm = hf.AutoModelForCausalLM.from_pretrained(tmp_path / "base-hf", dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(hm, tmp_path / "adapter").eval()
    ids = tiny_tok.encode("<tool_call>\n" + PROMPT + "</tool_call>")
    with torch.no_grad():
        got = pm(torch.tensor([ids])).logits[0].float()
    want = logits(model, ids)
    assert (got - want).abs().max() < 1e-4
    merged, _, _ = load_checkpoint(tmp_path / "adapter")
    assert (logits(merged, ids) - want).abs().max() < 1e-4
    call = tiny_tok.tok.token_to_id("<tool_call>")
    assert (want[:, call] - logits(base, ids)[:, call]).abs().max() > 1e-2  # the head reads the new row


def test_merged_export_equals_serving_the_adapter(setup, tiny_tok, hf, tmp_path) -> None:
    root, model = setup
    served, tok, meta = load_checkpoint(root / "adapter")  # what chat, serve and eval load
    assert meta["base"] == str((root / "base").resolve()) and tok.fingerprint() == tiny_tok.fingerprint()
    assert not any(isinstance(m, LoRALinear) for m in served.modules())
    ids = tiny_tok.encode(PROMPT)
    assert (logits(served, ids) - logits(model, ids)).abs().max() < 1e-4
    assert main(["export", "--model", str(root / "adapter"), "--merge-lora", str(tmp_path / "m")]) == 0
    hm = hf.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    with torch.no_grad():
        got = hm(torch.tensor([ids])).logits[0].float()
    assert (got - logits(served, ids)).abs().max() < 1e-4
    # Without --merge-lora an adapter is refused with the way out, and nothing is written.
    assert main(["export", "--model", str(root / "adapter"), str(tmp_path / "n")]) == 2
    assert not (tmp_path / "n").exists()


def test_merged_gguf_export_equals_serving_the_adapter(setup, tiny_tok, tmp_path) -> None:
    from chatsmith.interop import import_main

    root, _ = setup
    f = tmp_path / "merged.gguf"
    assert main(["export", "--model", str(root / "adapter"), "--merge-lora", "--to", "gguf", str(f)]) == 0
    import_main(str(f), str(tmp_path / "back"))
    back, _, _ = load_checkpoint(tmp_path / "back")
    served, _, _ = load_checkpoint(root / "adapter")
    with torch.no_grad():  # F16 holds the matrices (GGUF keeps 1-D norms in F32): round them alike
        for p in served.parameters():
            p.copy_(p.half().float() if p.dim() == 2 else p)
    ids = tiny_tok.encode(PROMPT)
    assert (logits(back, ids) - logits(served, ids)).abs().max() < 1e-4


def test_an_adapter_for_another_base_is_one_error_and_nothing_written(setup, tiny_tok, tmp_path, capsys):
    root, _ = setup
    make_base(tiny_tok, tmp_path / "other", seed=2)  # same shapes, other weights
    make_base(tiny_tok, tmp_path / "wide", seed=3, n_embd=96, n_head=6, n_kv_head=2)  # other shapes
    for base in ("other", "wide"):
        out = tmp_path / f"out-{base}"
        args = ["export", "--model", str(tmp_path / base), "--merge-lora", "--adapter", str(root / "adapter")]
        args.append(str(out))
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is for another base" in err and err.count("\n") == 1, err
        assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


def file_hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_lora_sft_trains_only_the_adapter(tiny_tok, tmp_path) -> None:
    from chatsmith.train.sft import run_sft

    make_base(tiny_tok, tmp_path / "base", seed=1)
    before = file_hashes(tmp_path / "base")
    cfg = Config()
    cfg.lora = LoRAConfig(rank=4, alpha=8.0)
    cfg.sft.steps, cfg.sft.batch_size, cfg.sft.seq_len, cfg.sft.eval_batches = 6, 4, 64, 1
    cfg.sft.warmup_steps, cfg.sft.lr = 0, 1e-2
    convs = [[{"role": "user", "content": f"Who are you? {i}"},
              {"role": "assistant", "content": "I am chatsmith, 一个助手."}] for i in range(24)]
    out = tmp_path / "sft"
    metrics = MetricsLog(None, "sft")
    run_sft(cfg, tmp_path / "base", out, convs, convs[:4], torch.device("cpu"), torch.float32, metrics)
    assert file_hashes(tmp_path / "base") == before  # the base's bytes are unchanged
    assert is_adapter(out) and not (out / "model.safetensors").exists()
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert tensors and all(".lora_A." in k or ".lora_B." in k for k in tensors)
    assert any(k.endswith("lora_B.weight") and t.abs().max() > 0 for k, t in tensors.items())
    base, _, _ = load_checkpoint(tmp_path / "base")
    tuned, _, _ = load_checkpoint(out)
    ids = tiny_tok.encode("Who are you?")
    assert (logits(tuned, ids) - logits(base, ids)).abs().max() > 1e-3


def test_the_reference_is_the_base_with_adapters_off(setup, tiny_tok) -> None:
    root, model = setup
    base, _, _ = load_checkpoint(root / "base")
    ref = reference_of(model)
    ids = tiny_tok.encode(PROMPT)
    with torch.no_grad():
        assert torch.equal(ref(torch.tensor([ids]))[0], logits(base, ids))
    assert not any(p.data_ptr() == q.data_ptr() for p in base.parameters() for q in model.parameters())
    assert (logits(model, ids) - logits(base, ids)).abs().max() > 1e-2  # adapters back on after
    with adapters_off(model):
        assert torch.equal(logits(model, ids), logits(base, ids))


def test_only_adapter_parameters_train(setup) -> None:
    _, model = setup
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_tok) -> None:
    torch.manual_seed(0)
    grads = []
    for ckpt in (False, True):
        model = build_model(tiny_cfg(tiny_tok.vocab_size), seed=5)
        randomize(model, 5)
        if ckpt:
            enable_checkpointing(model)
        model.train()
        x = torch.randint(0, tiny_tok.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
        model(x, x).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bad_targets_are_refused(tiny_tok) -> None:
    from chatsmith.common.errors import ChatsmithError

    model = build_model(tiny_cfg(tiny_tok.vocab_size), seed=0)
    with pytest.raises(ChatsmithError, match=r"lora\.targets"):
        apply_lora(model, LoRAConfig(rank=2, targets="q_proj,qkv"), Path("."), 0)


def test_the_server_serves_an_adapter_on_its_base(setup, tiny_tok) -> None:
    """`chatsmith serve --model ADAPTER_DIR`: the greedy reply is the adapted model's."""
    from chatsmith.engine.generate import generate_uncached
    from chatsmith.engine.sampling import SamplingParams
    from chatsmith.serve.backend import Backend

    root, model = setup
    ids = tiny_tok.encode(PROMPT)
    want = generate_uncached(model, ids, 8)
    b = Backend("adapter", max_batch=2)
    b.load_in_background(str(root / "adapter"), "cpu").join()
    assert b.error is None and b.wait_ready(5)
    try:
        req = b.submit(ids, SamplingParams(max_new_tokens=8, stop_token_ids=[]), run_tools=False)
        got = [e.token for e in req.events(timeout=60) if e.kind == "token"]
    finally:
        b.shutdown(drain=False, timeout=5)
    assert got == want
