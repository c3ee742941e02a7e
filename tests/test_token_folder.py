"""The token folder pretraining reads: it carries its tokenizer, refuses another one with a clear
error, says what is wrong with a bad folder, and stores ids past 65,535 as uint32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.tokens.folder import (
    bytes_per_token,
    finish_folder,
    folder_tokenizer,
    read_manifest,
    write_token_folder,
)
from chatsmith.data.tokens.shards import write_shard
from chatsmith.data.tokens.stream import BOSAlignedLoader
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.train.pretrain import run_tokenizer


@pytest.fixture
def folder(tmp_path: Path, tiny_tok: BPETokenizer, tiny_corpus_texts: list[str]) -> Path:
    d = tmp_path / "tokens"
    parts = [("train", "train", tiny_corpus_texts[:400]), ("val", "val", tiny_corpus_texts[400:])]
    write_token_folder(d, tiny_tok, parts)
    return d


def test_the_folder_carries_its_tokenizer_and_marks_its_held_out_shard(
    folder: Path, tiny_tok: BPETokenizer, tiny_corpus_texts: list[str]
) -> None:
    assert folder_tokenizer(folder).fingerprint() == tiny_tok.fingerprint()
    m = read_manifest(folder)
    assert [s["split"] for s in m["shards"]] == ["train", "val"]
    train = BOSAlignedLoader(folder, 2, 16, split="train")
    val = BOSAlignedLoader(folder, 2, 16, split="val")
    assert (train.documents, val.documents) == (400, len(tiny_corpus_texts) - 400)
    held_out = tiny_corpus_texts[400:]
    text_tokens = sum(len(tiny_tok.encode(t)) for t in held_out)
    assert bytes_per_token(m, "val") == pytest.approx(sum(len(t.encode()) for t in held_out) / text_tokens)


def test_a_run_with_another_tokenizer_refuses_the_folder(
    folder: Path, tmp_path: Path, tiny_corpus_texts: list[str]
) -> None:
    run = tmp_path / "run"
    assert run_tokenizer(folder, run).fingerprint() == folder_tokenizer(folder).fingerprint()
    assert (run / "tokenizer" / "tokenizer.json").is_file()  # the folder's tokenizer became the run's
    other = BPETokenizer.train(tiny_corpus_texts[:200], vocab_size=400)
    other.save(run / "tokenizer" / "tokenizer.json")
    with pytest.raises(ChatsmithError, match=f"{other.fingerprint()}.*start a new run"):
        run_tokenizer(folder, run)


def test_a_bad_folder_is_a_clear_error(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ChatsmithError, match="not a folder"):
        read_manifest(tmp_path / "nothing")
    with pytest.raises(ChatsmithError, match="data tokenize"):
        read_manifest(tmp_path)
    (folder / "tokenizer.json").rename(tmp_path / "moved.json")
    with pytest.raises(ChatsmithError, match=r"no tokenizer\.json"):
        folder_tokenizer(folder)
    (folder / "val.bin").unlink()
    with pytest.raises(ChatsmithError, match=r"missing: val\.bin"):
        read_manifest(folder)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(ChatsmithError, match="not valid JSON"):
        read_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ChatsmithError, match="not a chatsmith token-shard manifest"):
        read_manifest(folder)


def test_ids_past_65535_are_stored_as_uint32_and_read_back(tmp_path: Path, tiny_tok: BPETokenizer) -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 70_000, n) for n in (40, 90, 7, 300)]
    docs = [d[d != tiny_tok.bos_id] for d in docs]
    m = write_shard(tmp_path / "big.bin", docs, tiny_tok.bos_id, 70_000, tiny_tok.fingerprint(), bytes=1000)
    assert m["dtype"] == "uint32" and max(int(d.max()) for d in docs) > 65_535
    finish_folder(tmp_path, tiny_tok, [m])
    loader = BOSAlignedLoader(tmp_path, 1, 16, split="all")
    got = sorted(tuple(loader.document(i)[1:].tolist()) for i in range(loader.documents))
    assert got == sorted(tuple(d.tolist()) for d in docs)


def test_pretrain_epochs_become_steps_that_cover_the_folder_once(folder: Path) -> None:
    """--pretrain.epochs=1 on 2 ranks: the steps the loop derives read every training row once."""
    from chatsmith.common.config import TrainConfig
    from chatsmith.train.loop import steps_from_epochs

    rank0 = BOSAlignedLoader(folder, 2, 16, 0, 2, split="train")
    tc = TrainConfig(batch_size=2, seq_len=16, epochs=1.0)
    steps_from_epochs("pretrain", tc, rank0, world=2)
    per_step = 2 * 2  # rows per rank x ranks (no accumulation at these sizes)
    assert tc.steps == -(-rank0.rows_per_epoch // per_step)
    assert (tc.steps - 1) * per_step < rank0.rows_per_epoch <= tc.steps * per_step
