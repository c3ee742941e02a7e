"""llama.cpp (through llama-cpp-python, test-only) loads chatsmith's GGUF exports as they are:
same tokens for the prompt, same greedy continuation for 32 tokens on an English, a Chinese
and a tool-call prompt, for a model with chatsmith's own tokenizer and for an imported one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import peaky_engine_model, smollm2_gguf

from chatsmith.checkpoint import load_checkpoint, save_checkpoint
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.interop import export_main, import_main
from chatsmith.tokenizer.chat_format import encode_prompt

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (a test-only dependency)")
pytestmark = pytest.mark.slow
N_TOKENS = 32
CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "请用一句话介绍你自己。"}],
    [
        {"role": "user", "content": "What is 37 * 41? Use the calculator."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": "37 * 41"}}}],
        },
        {"role": "tool", "content": "1517"},
    ],
]


@pytest.fixture(autouse=True)
def no_extra_buffer_types(monkeypatch) -> None:
    """llama.cpp's extra CPU buffer types (weight repacking, AMX) crashed with a general
    protection fault on an AMX-BF16 host; llama-cpp-python has no switch, so the model
    parameters it starts from get use_extra_bufts off."""
    import llama_cpp.llama as high

    default = high.llama_cpp.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    monkeypatch.setattr(high.llama_cpp, "llama_model_default_params", params)


def llama_greedy(llm: Any, prompt: list[int], n: int, stops: set[int]) -> list[int]:
    out: list[int] = []
    for t in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(t))
        if t in stops or len(out) == n:
            break
    return out


def check_same_tokens(ckpt: Path, gguf_file: Path) -> None:
    model, tok, _ = load_checkpoint(ckpt)
    llm = llama_cpp.Llama(str(gguf_file), n_ctx=512, n_threads=2, n_batch=512, verbose=False)
    stops = {tok.im_end_id, tok.bos_id}
    prompts = [encode_prompt(tok, conv) for conv in CONVERSATIONS]
    limit = min(512, model.cfg.seq_len)  # a tiny model's context ends some answers early: both sides alike
    gen = Generator(model, tok, max_len=limit, slots=len(prompts))  # chat and serve's engine
    outs = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=N_TOKENS), run_tools=False)
    for ids, out in zip(prompts, outs):
        text = tok.decode(ids)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, text
        n = min(N_TOKENS, limit + 1 - len(ids))  # a full context still samples one last token
        theirs = [t for t in llama_greedy(llm, ids, n, stops) if t not in stops]
        ours = [t for t in out[0].token_ids if t not in stops]
        assert len(ours) > 3 and theirs == ours, (tok.decode(theirs), tok.decode(ours))


def test_llama_cpp_runs_a_chatsmith_model_as_chatsmith_does(tiny_tok, tmp_path: Path) -> None:
    model = peaky_engine_model(tiny_tok.vocab_size + 8, seed=3)  # clear greedy choices
    save_checkpoint(tmp_path / "ckpt", model, tiny_tok, {"stage": "sft", "step": 1})
    export_main(str(tmp_path / "ckpt"), "gguf", str(tmp_path / "m.gguf"), gguf_type="f32")
    check_same_tokens(tmp_path / "ckpt", tmp_path / "m.gguf")


def test_llama_cpp_runs_an_imported_model_as_chatsmith_does(tmp_path: Path) -> None:
    src = smollm2_gguf()
    import_main(str(src), str(tmp_path / "ckpt"))
    export_main(str(tmp_path / "ckpt"), "gguf", str(tmp_path / "back.gguf"), gguf_type="f32")
    check_same_tokens(tmp_path / "ckpt", tmp_path / "back.gguf")
