"""Bits per byte: every token scored once, and the figure equals the definition."""

from __future__ import annotations

import json
import math

import torch

from chatsmith.data.tokens.shards import write_shard
from chatsmith.eval.bpb import load_documents, windows
from chatsmith.eval.runner import EvalSettings, evaluate_model
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig


def test_windows_predict_every_token_once():
    docs = [[0, *range(1, 150)], [0, 5, 6]]
    wins = windows(docs, seq_len=64)
    predicted = [t for w in wins for t in w[1:]]
    assert predicted == [*docs[0][1:], *docs[1]]
    assert [len(w) for w in wins] == [65, 65, 25]  # no padding: only the last window is short


def test_bpb_equals_its_definition(tmp_path, tiny_tok):
    model = build_model(GPTConfig(tiny_tok.vocab_size, 1, 32, 2, 2, 16, 64, 256), seed=0)
    texts = [
        "The quick brown fox jumps over the lazy dog. 我是一个助手。",
        "def add(a, b):\n    return a + b\n",
    ]
    (tmp_path / "held_out.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    res = evaluate_model(model, tiny_tok, [f"bpb:{tmp_path / 'held_out.jsonl'}"], EvalSettings())
    # Both documents fit in one window of the packed stream: one forward, BOS targets not scored.
    ids = [t for text in texts for t in [tiny_tok.bos_id, *tiny_tok.encode(text)]]
    targets = torch.tensor([[t if t != tiny_tok.bos_id else -1 for t in ids[1:]]])
    with torch.no_grad():
        nats = float(model(torch.tensor([ids[:-1]]), targets, reduction="sum"))
    nbytes = sum(len(t.encode()) for t in texts)
    got = res["bpb"]["metrics"]
    assert got["bytes"] == nbytes
    assert math.isclose(got["bpb"], nats / math.log(2) / nbytes, rel_tol=1e-5)


def test_shard_source_uses_the_manifest_bytes(tmp_path, tiny_tok):
    docs = ["hello world", "a second document"]
    write_shard(
        tmp_path / "val.bin",
        tiny_tok.encode_batch(docs),
        tiny_tok.bos_id,
        tiny_tok.vocab_size,
        tiny_tok.fingerprint(),
        bytes=28,
    )
    got, nbytes = load_documents(tmp_path / "val.bin", tiny_tok)
    assert nbytes == 28
    assert [tiny_tok.decode(d[1:]) for d in got] == docs
