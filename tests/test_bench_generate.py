"""`chatsmith bench generate` on a tiny random model: JSON on the last line, figures that agree
with each other, and the same greedy tokens as transformers on the exported weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from chatsmith.bench.engine_side import run_engine_side
from chatsmith.bench.generate import bench_generate_main, build_prompt
from chatsmith.checkpoint import save_checkpoint
from chatsmith.common.errors import ChatsmithError
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig
from chatsmith.tokenizer.special import SPECIAL_TOKENS


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine spinning threads cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tiny_tok, tmp_path_factory) -> Path:
    cfg = GPTConfig(
        vocab_size=tiny_tok.vocab_size + 8,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=128,
        seq_len=64,
    )
    model = build_model(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "norm" in name else 0.0))
    path = tmp_path_factory.mktemp("bench") / "ckpt"
    save_checkpoint(path, model.eval(), tiny_tok, {"stage": "sft", "step": 1})
    return path


def run_bench(args: list[str], capsys) -> dict:
    assert bench_generate_main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_generate_prints_consistent_json(ckpt: Path, capsys) -> None:
    # transformers' decode time is (8 tokens) - (1 token) from separate runs, a few ms each: on a
    # busy machine one preempted 1-token run could swallow it, so take the best of 3 (tens of ms).
    args = ["--model", str(ckpt), "--prompt-tokens", "16", "--new-tokens", "8", "--repeats", "3"]
    args += ["--concurrency", "2,4", "--dtype", "float32", "--compile", "off"]  # compiling: tests of its own
    args += ["--kv-budget", "4k"]  # the default prefix: what the 64-token context holds
    r = run_bench(args, capsys)
    for key in ("bench", "device", "dtype", "prompt_tokens", "new_tokens", "chatsmith", "transformers"):
        assert key in r
    assert (r["bench"], r["device"], r["dtype"]) == ("generate", "cpu", "float32")
    assert (r["prompt_tokens"], r["new_tokens"]) == (16, 8)
    assert r["tokens_match"] is True and r["match_tokens"] >= 1
    cs, hf = r["chatsmith"], r["transformers"]
    for side in (cs, hf):
        assert side["ttft_s"] > 0 and side["decode_tok_s"] > 0
    assert hf["version"] and cs["weights"] == hf["weights"] == "float32" and cs["compiled_decode"] is False
    assert r["ratio_decode"] == pytest.approx(cs["decode_tok_s"] / hf["decode_tok_s"], rel=1e-2)
    assert r["ratio_ttft"] == pytest.approx(hf["ttft_s"] / cs["ttft_s"], rel=1e-2)
    for c in (2, 4):
        assert cs[f"aggregate_tok_s_{c}"] > 0 and hf[f"aggregate_tok_s_{c}"] > 0
        want = cs[f"aggregate_tok_s_{c}"] / cs["decode_tok_s"]
        assert r[f"ratio_aggregate_{c}_vs_batch1"] == pytest.approx(want, rel=1e-2)
    pc = r["prefix_cache"]
    # 61 shared + 2 tokens of its own + 1 generated fill the context exactly
    assert pc["shared_tokens"] == 61 and pc["ttft_cold_s"] > 0 and pc["ttft_warm_s"] > 0
    assert "llama_cpp" not in r  # no --gguf


def test_prompt_has_the_asked_length_and_no_stray_special_tokens(tiny_tok) -> None:
    specials = {tiny_tok.token_id(t) for t in SPECIAL_TOKENS}
    for n in (1, 5, 16, 64):
        ids = build_prompt(tiny_tok, n)
        assert len(ids) == n and ids == build_prompt(tiny_tok, n)
        if n >= 16:  # a whole chat prompt (the frame is 15 tokens here): user text, assistant header
            text = tiny_tok.decode(ids)
            assert text.startswith("<|im_start|>user\n") and len(text) > len("<|im_start|>user\n")
            assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
            assert sum(t in specials for t in ids) == 3
        else:
            assert not specials & set(ids)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--new-tokens", "1"], "--new-tokens"),
        (["--prompt-tokens", "0"], "--prompt-tokens"),
        (["--repeats", "0"], "--repeats"),
        (["--prompt-tokens", "60", "--new-tokens", "8"], "context"),
        (["--prompt-tokens", "8", "--new-tokens", "8", "--prefix-tokens", "8"], "--prefix-tokens"),
        (["--prompt-tokens", "8", "--new-tokens", "8", "--prefix-tokens", "62"], "--prefix-tokens"),
        (["--prompt-tokens", "8", "--new-tokens", "8", "--gguf", "/nonexistent/model.gguf"], "no GGUF"),
    ],
)
def test_bad_arguments_are_user_errors(ckpt: Path, extra: list[str], needle: str) -> None:
    with pytest.raises(ChatsmithError, match=needle):
        bench_generate_main(["--model", str(ckpt), *extra])


def test_a_failing_engine_side_is_an_error_not_a_hang(tmp_path: Path) -> None:
    # The spawned process dies loading a checkpoint that is not there: the parent must
    # report it rather than wait on the queue for figures that never come.
    with pytest.raises(ChatsmithError, match="exit code 1"):
        run_engine_side(str(tmp_path / "nope"), "cpu", "float32", 8, 8, 1, (2,), False, {}, "bf16")


def test_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ChatsmithError, match="no checkpoint"):
        bench_generate_main(["--model", str(tmp_path / "nope")])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_generate_on_cuda_in_bf16(ckpt: Path, capsys) -> None:
    args = ["--model", str(ckpt), "--prompt-tokens", "16", "--new-tokens", "16", "--device", "cuda"]
    r = run_bench([*args, "--repeats", "2"], capsys)
    assert (r["device"], r["dtype"]) == ("cuda", "bfloat16")  # the default on CUDA
    assert r["chatsmith"]["weights"] == "bfloat16" and r["transformers"]["weights"] == "bfloat16"
    assert r["tokens_match"] is True  # checked in float32 whatever the timed dtype
    assert r["chatsmith"]["decode_tok_s"] > 0 and r["transformers"]["decode_tok_s"] > 0
