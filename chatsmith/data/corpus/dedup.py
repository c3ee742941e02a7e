"""Deduplicate document shards: exact (hash of normalized text) and near (MinHash LSH, datasketch).

A document is compared with every earlier kept document; the first copy stays. Near duplicates
follow FineWeb's recipe (Penedo et al. 2024): word 5-gram shingles, MinHash signatures, LSH
bands to find candidates. Each candidate pair is then checked on its estimated Jaccard similarity,
so LSH can be tuned for recall (bands favour false positives, which the check removes).

The estimate of a Jaccard J from n permutations has a standard deviation of sqrt(J(1-J)/n),
0.035 at J=0.8 and n=128; the default `threshold` of 0.7 sits three of those below 0.8, so pairs
at J >= 0.8 are caught with probability above 99 %. CJK characters count as words (Chinese
marks no word boundaries with spaces), Latin words are lowercased.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import DocShardWriter, check_distinct, iter_doc_batches, write_json
from chatsmith.data.corpus.quality import CJK

_UNITS = re.compile(f"[{CJK}]|[^\\W{CJK}]+")


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    threshold: float = 0.7  # estimated Jaccard at or above which two documents are near duplicates
    num_perm: int = 128  # MinHash permutations
    shingle: int = 5  # words per shingle
    recall_weight: float = 0.9  # LSH band choice: weight of false negatives against false positives
    seed: int = 1


def exact_key(text: str) -> bytes:
    """Hash of the text, lowercased with whitespace collapsed: trivially different copies match."""
    norm = " ".join(text.lower().split()).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(norm, digest_size=16).digest()


def shingles(text: str, n: int) -> list[bytes]:
    """Word n-grams (CJK characters are words) as bytes; a short text is one shingle."""
    units = _UNITS.findall(text.lower())
    if len(units) <= n:
        return [" ".join(units).encode()] if units else []
    return [" ".join(units[i : i + n]).encode() for i in range(len(units) - n + 1)]


def _crc32(b: bytes) -> int:
    return zlib.crc32(b)


class NearDedup:
    """Streaming near-duplicate detector: `seen(text)` says whether a similar text came before."""

    def __init__(self, cfg: DedupConfig) -> None:
        if not 0.0 < cfg.threshold < 1.0:
            raise ChatsmithError(f"dedup threshold must be between 0 and 1 (got {cfg.threshold})")
        self.cfg = cfg
        self._template = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=_crc32)
        self.lsh = MinHashLSH(
            threshold=cfg.threshold,
            num_perm=cfg.num_perm,
            weights=(1.0 - cfg.recall_weight, cfg.recall_weight),
        )
        self.sigs = np.zeros((1024, cfg.num_perm), dtype=self._template.hashvalues.dtype)
        self.n = 0

    def minhash(self, text: str) -> MinHash:
        m = MinHash(
            num_perm=self.cfg.num_perm,
            seed=self.cfg.seed,
            hashfunc=_crc32,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        m.update_batch(shingles(text, self.cfg.shingle))
        return m

    def seen(self, text: str) -> bool:
        """True if text is a near duplicate of an earlier one; otherwise remember it and return False."""
        m = self.minhash(text)
        cands = self.lsh.query(m)
        if cands:
            idx = np.fromiter(cands, dtype=np.int64, count=len(cands))
            est = (self.sigs[idx] == m.hashvalues).mean(axis=1)
            if est.max() >= self.cfg.threshold:
                return True
        if self.n == len(self.sigs):
            self.sigs = np.concatenate([self.sigs, np.zeros_like(self.sigs)])
        self.sigs[self.n] = m.hashvalues
        self.lsh.insert(self.n, m, check_duplication=False)
        self.n += 1
        return False


class Deduplicator:
    """Exact, then near, duplicate detection over a stream of documents; counts both."""

    def __init__(self, cfg: DedupConfig | None = None) -> None:
        self.cfg = cfg or DedupConfig()
        self.exact_keys: set[bytes] = set()
        self.near = NearDedup(self.cfg) if self.cfg.near else None
        self.documents_in = self.documents_out = self.exact_dups = self.near_dups = 0

    def keep(self, text: str) -> bool:
        self.documents_in += 1
        if self.cfg.exact:
            k = exact_key(text)
            if k in self.exact_keys:
                self.exact_dups += 1
                return False
            self.exact_keys.add(k)
        if self.near is not None and self.near.seen(text):
            self.near_dups += 1
            return False
        self.documents_out += 1
        return True

    def report(self) -> dict[str, Any]:
        return {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "exact_duplicates": self.exact_dups,
            "near_duplicates": self.near_dups,
            "config": dataclasses.asdict(self.cfg),
        }


def dedup_texts(texts: list[str], cfg: DedupConfig | None = None) -> list[bool]:
    """Which texts to keep (first copies), for use on an in-memory list."""
    d = Deduplicator(cfg)
    return [d.keep(t) for t in texts]


def dedup_dir(
    in_dir: Path, out_dir: Path, cfg: DedupConfig | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Deduplicate every document shard of in_dir (globally) into out_dir; writes dedup_report.json."""
    check_distinct(in_dir, out_dir, "dedup")
    d = Deduplicator(cfg)
    writer = DocShardWriter(Path(out_dir))
    for batch in log.progress(iter_doc_batches(in_dir), desc="dedup"):
        for text, source, doc_id in zip(batch["text"], batch["source"], batch["id"]):
            if d.keep(text):
                writer.add(text, source, doc_id)
    writer.close()
    report = d.report()
    write_json(Path(out_dir) / "dedup_report.json", report)
    if not quiet:
        log.info(
            f"dedup: {in_dir} -> {out_dir}: {report['documents_in']} in, "
            f"{report['exact_duplicates']} exact and "
            f"{report['near_duplicates']} near duplicates removed, {report['documents_out']} out"
        )
    return report
