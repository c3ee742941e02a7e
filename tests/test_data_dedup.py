"""Deduplication: planted near duplicates (Jaccard >= 0.8) go, distinct documents stay."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.dedup import DedupConfig, Deduplicator, dedup_dir, dedup_texts
from chatsmith.data.corpus.docshards import DocShardWriter, iter_doc_batches

SYL = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "zu", "ri", "fe", "gon", "bal", "tor"]


def vocabulary(rng: random.Random, n: int) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYL) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of word 5-shingles, computed independently of the module under test."""

    def sh(t: str) -> set[tuple[str, ...]]:
        w = t.lower().split()
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def near_copy(rng: random.Random, doc: str, vocab: list[str]) -> str:
    """A copy with a few word substitutions, insertions, deletions, or a changed tail."""
    w = doc.split()
    for _ in range(rng.randint(1, 3)):
        op, i = rng.randrange(4), rng.randrange(len(w))
        if op == 0:
            w[i] = rng.choice(vocab)
        elif op == 1:
            w.insert(i, rng.choice(vocab))
        elif op == 2:
            del w[i]
        else:
            w[i] = w[i].upper()  # case only: the same shingle after lowercasing
    return " ".join(w)


def make_corpus(seed: int = 0) -> tuple[list[str], list[int]]:
    """Texts and their group ids: group -1 for distinct documents; a planted pair shares a group id."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, 4000)
    common = [rng.choice(vocab) for _ in range(60)]  # boilerplate-like shared opening of related docs
    texts, groups = [], []
    for g in range(900):
        body = [rng.choice(vocab) for _ in range(rng.randint(80, 200))]
        if g % 5 == 0:  # related but distinct: a shared opening, Jaccard well under the threshold
            body = common + body
        texts.append(" ".join(body))
        groups.append(g if g < 300 else -1)
    for g in range(300):
        while True:
            dup = near_copy(rng, texts[g], vocab)
            if shingle_jaccard(texts[g], dup) >= 0.8:
                break
        texts.append(dup)
        groups.append(g)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [groups[i] for i in order]


def test_planted_near_duplicates_are_removed_and_distinct_documents_kept(tmp_path: Path) -> None:
    texts, groups = make_corpus()
    pairs = [(i, j) for i in range(len(texts)) for j in range(i) if groups[i] == groups[j] != -1]
    assert len(pairs) == 300 and min(shingle_jaccard(texts[i], texts[j]) for i, j in pairs) >= 0.8
    distinct = [i for i in range(len(texts)) if groups[i] == -1]
    related = [shingle_jaccard(texts[i], texts[j]) for i in distinct[::5] for j in distinct[1::7] if i != j]
    assert 0.1 < max(related) < 0.6  # some share an opening, but the distinct documents are distinct

    w = DocShardWriter(tmp_path / "docs", row_group=128)
    for i, t in enumerate(texts):
        w.add(t, "planted", str(i))
    w.close()
    report = dedup_dir(tmp_path / "docs", tmp_path / "dedup", quiet=True)
    kept = {int(i) for b in iter_doc_batches(tmp_path / "dedup") for i in b["id"]}

    pair_groups = {g for g in groups if g != -1}
    removed_dups = sum(1 for g in pair_groups if sum(1 for i in kept if groups[i] == g) == 1)
    removed_distinct = sum(1 for i in distinct if i not in kept)
    firsts = {}
    for i, g in enumerate(groups):
        firsts.setdefault(g, i)
    assert all(firsts[g] in kept for g in pair_groups)  # the first copy is the one kept
    assert removed_dups >= 0.95 * len(pair_groups), removed_dups
    assert removed_distinct <= 0.01 * len(distinct), removed_distinct
    assert report["documents_in"] == len(texts)
    removed = report["near_duplicates"] + report["exact_duplicates"]
    assert report["documents_out"] == len(kept) == len(texts) - removed
    assert json.loads((tmp_path / "dedup" / "dedup_report.json").read_text()) == report


def test_exact_duplicates_match_after_case_and_whitespace_normalisation() -> None:
    texts = ["Hello   world, this is a test.", "hello world,\nthis is a TEST.", "Something else entirely."]
    d = Deduplicator(DedupConfig(near=False))
    assert [d.keep(t) for t in texts] == [True, False, True]
    assert d.exact_dups == 1 and d.near_dups == 0


def test_thresholds_are_configurable() -> None:
    rng = random.Random(3)
    vocab = vocabulary(rng, 2000)
    a = " ".join(rng.choice(vocab) for _ in range(150))
    w = a.split()
    for i in range(0, 150, 15):  # ten substitutions: Jaccard around 0.5
        w[i] = rng.choice(vocab)
    b = " ".join(w)
    assert 0.4 < shingle_jaccard(a, b) < 0.65
    assert dedup_texts([a, b]) == [True, True]  # default threshold 0.7: not near duplicates
    assert dedup_texts([a, b], DedupConfig(threshold=0.3)) == [True, False]
    assert dedup_texts([a, a], DedupConfig(exact=False, near=False)) == [True, True]


def test_chinese_near_duplicates_use_characters_as_words() -> None:
    a = "機器學習是人工智能的一個分支，它研究計算機如何從數據中自動學習規律並用於預測與決策" * 3
    b = a.replace("預測", "推斷", 1)
    assert dedup_texts([a, b]) == [True, False]
    other = "今天天氣很好，我們去公園散步，看見許多孩子在草地上放風箏，老人在樹下下棋聊天。"
    assert dedup_texts([a, other]) == [True, True]


def test_bad_threshold_is_a_clear_error() -> None:
    with pytest.raises(ChatsmithError, match="threshold"):
        Deduplicator(DedupConfig(threshold=1.5))
