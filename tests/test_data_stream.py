"""The BOS-aligned loader: rows start with BOS, ranks partition the batch, exact resume, disjoint splits."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import DocShardWriter
from chatsmith.data.tokens.stream import BOSAlignedLoader
from chatsmith.data.tokens.tokenize_shards import tokenize_dir
from chatsmith.tokenizer.bpe import BPETokenizer

T = 48


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, tiny_tok: BPETokenizer, tiny_corpus_texts: list[str]
) -> tuple[Path, BPETokenizer, list[tuple[int, ...]]]:
    """A token folder of short, long (> T+1 tokens) and exactly repeated documents, in several shards."""
    d = tmp_path_factory.mktemp("stream")
    texts = list(tiny_corpus_texts[:300])
    texts += [" ".join(tiny_corpus_texts[i : i + 12]) for i in range(0, 240, 12)]  # long documents
    texts += [tiny_corpus_texts[5]] * 4 + [tiny_corpus_texts[77]] * 3  # exact copies
    w = DocShardWriter(d / "docs", shard_docs=100, row_group=40)
    for i, t in enumerate(texts):
        w.add(t, "s", str(i))
    w.close()
    tiny_tok.save(d / "tokenizer.json")
    tokenize_dir(d / "tokenizer.json", d / "docs", d / "tokens", workers=1, quiet=True)
    docs = [tuple([tiny_tok.bos_id, *tiny_tok.encode(t)]) for t in texts]
    assert max(len(x) for x in docs) > T + 1
    return d / "tokens", tiny_tok, docs


def segments(row: np.ndarray, bos: int) -> list[tuple[int, ...]]:
    starts = [*np.flatnonzero(row == bos).tolist(), row.size]
    return [tuple(int(t) for t in row[a:b]) for a, b in itertools.pairwise(starts)]


def is_piece(seg: tuple[int, ...], docs: list[tuple[int, ...]]) -> bool:
    """A document's start (BOS + its first tokens) or the rest of a cropped one behind a BOS of its own."""
    rest = seg[1:]
    return any(
        d[: len(seg)] == seg
        or any(d[o : o + len(rest)] == rest for o in range(1, len(d) - len(rest) + 1))
        for d in docs
    )


def test_every_row_starts_with_bos_and_holds_documents_or_their_rests(corpus: tuple) -> None:
    tok_dir, tok, docs = corpus
    whole = set(docs)
    loader = BOSAlignedLoader(tok_dir, batch_size=4, seq_len=T, split="all", buffer_size=16)
    cropped = 0
    for _ in range(60):  # more than one epoch
        x, y = loader.next_batch()
        assert x.shape == y.shape == (4, T) and x.dtype == y.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert bool((x[:, 0] == tok.bos_id).all())
        for r in range(4):
            row = torch.cat([x[r], y[r, -1:]]).numpy()
            segs = segments(row, tok.bos_id)
            assert sum(len(s) for s in segs) == T + 1
            assert all(s in whole or is_piece(s, docs) for s in segs)
            cropped += segs[-1] not in whole
    assert loader.epoch >= 1 and cropped > 0


def test_two_ranks_see_every_token_of_every_document_once_per_epoch(corpus: tuple) -> None:
    """Counted on the tokens the ranks' batches hold: each document of epoch 0, rests included."""
    tok_dir, tok, _ = corpus
    ranks = [BOSAlignedLoader(tok_dir, batch_size=3, seq_len=T, rank=r, world=2, seed=5) for r in range(2)]
    ref = ranks[0]
    counts = np.zeros(ref.documents, np.int64)  # tokens of each document seen in epoch 0
    while ref.epoch == 0 or any(p[2] == 0 for p in ref.buffer):
        batches = [ld.next_batch() for ld in ranks]
        rows = torch.cat([torch.cat([x, y[:, -1:]], 1) for x, y in batches]).numpy()
        assert ref.last_segments == ranks[1].last_segments
        for row, segs in zip(rows, ref.last_segments):
            p = 0
            for doc, off, take, epoch in segs:
                piece = row[p : p + take]
                assert piece[0] == tok.bos_id
                text = piece[1:] if off else piece  # a rest's BOS is added, not the document's
                assert np.array_equal(text, ref.document(doc)[off : off + len(text)])
                if epoch == 0:
                    assert counts[doc] == off  # pieces come in order, none repeated or skipped
                    counts[doc] += len(text)
                p += take
    assert np.array_equal(counts, ref.doc_len)  # every token of every document, exactly once
    assert ref.tokens_per_epoch == int(ref.doc_len.sum()) and ref.rows_per_epoch <= ref.rows


def test_two_ranks_see_exactly_the_one_rank_batch(corpus: tuple) -> None:
    tok_dir = corpus[0]
    one = BOSAlignedLoader(tok_dir, batch_size=6, seq_len=T, seed=3)
    ranks = [BOSAlignedLoader(tok_dir, batch_size=3, seq_len=T, rank=r, world=2, seed=3) for r in range(2)]
    for _ in range(25):
        x, y = one.next_batch()
        parts = [ld.next_batch() for ld in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert not torch.equal(parts[0][0], parts[1][0])
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()


def test_resume_continues_exactly(corpus: tuple) -> None:
    tok_dir = corpus[0]
    a = BOSAlignedLoader(tok_dir, batch_size=5, seq_len=T, seed=7)
    for _ in range(17):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # as a checkpoint stores it
    expected = [a.next_batch() for _ in range(30)]  # crosses an epoch boundary
    b = BOSAlignedLoader(tok_dir, batch_size=5, seq_len=T, seed=7)
    b.load_state_dict(state)
    for x, y in expected:
        bx, by = b.next_batch()
        assert torch.equal(bx, x) and torch.equal(by, y)
    fresh = BOSAlignedLoader(tok_dir, batch_size=5, seq_len=T, seed=7)
    assert not torch.equal(fresh.next_batch()[0], expected[0][0])  # resuming is not restarting


def test_train_and_validation_documents_are_disjoint(corpus: tuple) -> None:
    tok_dir, _, docs = corpus
    train = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="train", val_fraction=0.2)
    val = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="val", val_fraction=0.2)
    tr = [tuple(int(t) for t in train.document(i)) for i in range(train.documents)]
    va = [tuple(int(t) for t in val.document(i)) for i in range(val.documents)]
    assert not set(tr) & set(va)
    assert sorted(tr + va) == sorted(docs)  # together they are the corpus, copies included
    assert 0.1 < len(va) / len(docs) < 0.3
    assert set(va) <= set(docs) and val.next_batch()[0].shape == (2, T)
    again = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="val", val_fraction=0.2)
    assert again.documents == val.documents  # the split is stable


def test_mistakes_are_clear_errors(corpus: tuple, tmp_path: Path) -> None:
    tok_dir = corpus[0]
    a = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="train")
    val = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="val")
    with pytest.raises(ChatsmithError, match="loader state"):
        val.load_state_dict(a.state_dict())
    with pytest.raises(ChatsmithError, match="rank"):
        BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, rank=2, world=2)
    with pytest.raises(ChatsmithError, match="re-tokenize"):
        BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, fingerprint="0" * 16)
    with pytest.raises(ChatsmithError, match="manifest"):
        BOSAlignedLoader(tmp_path, batch_size=2, seq_len=T)


def test_the_document_index_cache_is_used_and_checked(corpus: tuple) -> None:
    tok_dir = corpus[0]
    ref = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="all")
    caches = sorted(tok_dir.glob("*.index.npz"))
    assert len(caches) == len(ref.arrays) >= 2 and not list(tok_dir.glob("*.tmp"))
    shutil.copy(caches[1], caches[0])  # a stale cache (another shard's) must be noticed
    again = BOSAlignedLoader(tok_dir, batch_size=2, seq_len=T, split="all")
    assert again.documents == ref.documents
    assert all(np.array_equal(again.document(i), ref.document(i)) for i in range(ref.documents))
