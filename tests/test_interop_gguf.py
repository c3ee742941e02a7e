"""GGUF interop: a tiny chatsmith model written to GGUF (F16, Q8_0, Q4_0) imports with the
original's logits (exactly up to F16, within the quantization's own error otherwise), agrees
with transformers' GGUF loader, and bad files are refused with one clear error, nothing written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chatsmith.checkpoint import load_checkpoint, save_checkpoint
from chatsmith.common.errors import ChatsmithError
from chatsmith.interop import export_main, import_main
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "今天天气很好，我们去公园散步吧。", "x = 37 * 41"]
# GGUF architecture -> GPTConfig flags
ARCH_CFG = {"llama": dict(qk_norm=False), "qwen2": dict(qk_norm=False, qkv_bias=True), "qwen3": dict()}
# type -> quantization levels on each side of zero (a block's step is max|x| / levels)
BLOCKS = {"q8_0": 127.0, "q4_0": 8.0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@torch.no_grad()
def tiny_model(tok, arch: str, seed: int = 0) -> GPT:
    """Random non-zero weights, already F16-representable so an F16 file holds them exactly."""
    cfg = GPTConfig(
        vocab_size=tok.vocab_size + 8, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, head_dim=16,
        intermediate_size=128, seq_len=256, rope_theta=5000.0, **ARCH_CFG[arch],
    )
    model = build_model(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        p.copy_((torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "norm" in name else 0.0)).half().float())
    return model.eval()


def export_tiny(tok, arch: str, kind: str, tmp: Path) -> tuple[GPT, Path]:
    model = tiny_model(tok, arch)
    save_checkpoint(tmp / f"{arch}-ckpt", model, tok, {"stage": "sft", "step": 1})
    f = tmp / f"{arch}-{kind}.gguf"
    export_main(str(tmp / f"{arch}-ckpt"), "gguf", str(f), gguf_type=kind)
    return model, f


def logits(model: GPT, tok, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tok.encode(text)]))[0]


@pytest.mark.parametrize("arch", list(ARCH_CFG))
@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_0"])
def test_gguf_round_trip_keeps_logits(tiny_tok, tmp_path: Path, arch: str, kind: str) -> None:
    model, f = export_tiny(tiny_tok, arch, kind, tmp_path)
    import_main(str(f), str(tmp_path / "imported"))
    back, tok, meta = load_checkpoint(tmp_path / "imported")
    assert meta["source"]["architecture"] == arch and tok.encode(PROMPTS[1]) == tiny_tok.encode(PROMPTS[1])
    assert back.cfg == model.cfg
    if kind == "f16":
        for text in PROMPTS:
            ours, theirs = logits(model, tiny_tok, text), logits(back, tok, text)
            assert ours.abs().max() > 0.1
            torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
        return
    # Quantized: every weight within half a quantization step d of its 32-value block (a whole
    # one for Q4_0, whose top level is clipped), plus levels x the F16 rounding of d (2^-11 d).
    orig, new = model.state_dict(), back.state_dict()
    for name, w in orig.items():
        if w.ndim == 1:
            assert torch.equal(new[name], w), name  # norms and biases stay F32
            continue
        blocks = w.reshape(-1, 32)
        step = blocks.abs().amax(1, keepdim=True) / BLOCKS[kind]
        err = (new[name].reshape(-1, 32) - blocks).abs()
        rounding = 0.5 if kind == "q8_0" else 1.0
        assert (err <= step * (rounding + BLOCKS[kind] * 2**-11) + 1e-7).all(), name
        assert err.max() > 0, name  # really quantized
    if kind == "q8_0":  # 4 bits on a random network move logits too far for a useful bound
        for text in PROMPTS:
            ours, theirs = logits(model, tiny_tok, text), logits(back, tok, text)
            assert (theirs - ours).abs().max() < 0.05 * ours.abs().max()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_transformers_gguf_loader_agrees_with_import(tiny_tok, tmp_path: Path, arch: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    _, f = export_tiny(tiny_tok, arch, "q8_0", tmp_path)
    import_main(str(f), str(tmp_path / "imported"))
    ours, tok, _ = load_checkpoint(tmp_path / "imported")
    auto = transformers.AutoModelForCausalLM
    hm = auto.from_pretrained(str(tmp_path), gguf_file=f.name, dtype=torch.float32)
    hm.eval()
    with torch.no_grad():
        for text in PROMPTS:
            x = torch.tensor([tok.encode(text)])
            theirs = hm(x).logits[0].float()
            assert theirs.abs().max() > 0.1
            torch.testing.assert_close(ours(x)[0], theirs, atol=1e-4, rtol=0)


# ---- bad input: one clear error each, nothing written --------------------------------------------
def rewrite(src: Path, dst: Path, arch: str | None = None, bad_tensor: str | None = None) -> None:
    """A copy of a GGUF file with another architecture, or one tensor in an unsupported type."""
    import gguf

    r = gguf.GGUFReader(str(src))
    old_arch = r.fields["general.architecture"].contents()
    new_arch = arch or old_arch
    w = gguf.GGUFWriter(str(dst), new_arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name.replace(f"{old_arch}.", f"{new_arch}."), field.contents(), field.types[0], sub)
    for t in r.tensors:
        if t.name == bad_tensor:
            qt = gguf.GGMLQuantizationType.IQ4_NL
            block, size = gguf.GGML_QUANT_SIZES[qt]
            rows, cols = int(t.shape[1]), int(t.shape[0])
            w.add_tensor(t.name, np.zeros((rows, cols // block * size), np.uint8), raw_dtype=qt)
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bad_gguf_files_are_refused_and_nothing_is_written(tiny_tok, tmp_path: Path) -> None:
    _, good = export_tiny(tiny_tok, "llama", "f16", tmp_path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    gemma = tmp_path / "gemma.gguf"
    rewrite(good, gemma, arch="gemma")
    iq4 = tmp_path / "iq4.gguf"
    rewrite(good, iq4, bad_tensor="blk.0.ffn_up.weight")
    same = tmp_path / "same.gguf"
    rewrite(good, same)  # the copy alone imports: what fails below is the change
    import_main(str(same), str(tmp_path / "ok"))
    cases = {
        truncated: "truncated",
        gemma: "architecture 'gemma' is not supported",
        iq4: "IQ4_NL is not supported",
    }
    for f, message in cases.items():
        out = tmp_path / f"out-{f.stem}"
        with pytest.raises(ChatsmithError, match=message):
            import_main(str(f), str(out))
        assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
    with pytest.raises(ChatsmithError, match="no GGUF file"):
        import_main(str(tmp_path / "missing.gguf"), str(tmp_path / "out-missing"))
