"""Corpus statistics: documents, tokens, bytes per token, language mix, a length histogram (PNG).

`corpus_stats(DIR)` takes a folder of document shards or of token shards. For token shards it
reads the manifest (documents, tokens, bytes), measures document lengths in tokens from the
shards, and looks for the document shards the manifest names (`docs_dir`) for the language mix.
The language detector is deliberately simple: the script most of a document's letters are in
(CJK, Latin, other; `quality.script_of`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import PATTERN, iter_doc_batches, write_json
from chatsmith.data.corpus.quality import script_of
from chatsmith.data.tokens.shards import open_shard
from chatsmith.data.tokens.tokenize_shards import MANIFEST, read_manifest


def doc_dir_stats(doc_dir: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Counts of a document-shard folder and the documents' lengths in characters."""
    docs = n_bytes = chars = 0
    langs: Counter = Counter()
    sources: Counter = Counter()
    lengths: list[int] = []
    for batch in iter_doc_batches(doc_dir):
        for text, source in zip(batch["text"], batch["source"]):
            docs += 1
            n_bytes += len(text.encode("utf-8", "surrogatepass"))
            chars += len(text)
            lengths.append(len(text))
            langs[script_of(text)] += 1
            sources[source] += 1
    mix = {k: round(v / max(1, docs), 4) for k, v in sorted(langs.items())}
    return (
        {
            "documents": docs,
            "bytes": n_bytes,
            "chars": chars,
            "language_mix": mix,
            "language_counts": dict(sorted(langs.items())),
            "sources": dict(sorted(sources.items())),
        },
        np.asarray(lengths, dtype=np.int64),
    )


def token_lengths(tok_dir: Path, manifest: dict[str, Any]) -> np.ndarray:
    """Every document's length in tokens (BOS included), from the BOS positions of the shards."""
    out = []
    for s in manifest["shards"]:
        if not s["documents"]:
            continue
        arr = open_shard(tok_dir / s["file"], manifest["tokenizer"])
        starts = np.flatnonzero(arr == manifest["bos_id"])
        out.append(np.diff(np.append(starts, arr.size)))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def save_histogram(lengths: np.ndarray, unit: str, path: Path) -> None:
    """Log-spaced histogram of document lengths, as a PNG (matplotlib, Agg backend: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if lengths.size:
        hi = max(2, int(lengths.max()))
        bins = np.unique(np.geomspace(1, hi + 1, num=50).astype(np.int64))
        ax.hist(lengths, bins=bins if bins.size > 1 else 10, color="#3b7dd8")
        ax.set_xscale("log")
    ax.set_xlabel(f"document length ({unit})")
    ax.set_ylabel("documents")
    ax.set_title(f"{lengths.size} documents, median {int(np.median(lengths)) if lengths.size else 0} {unit}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def corpus_stats(path: str | Path, out: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Statistics of a document- or token-shard folder; writes stats.json and length_hist.png to out."""
    p = Path(path).expanduser()
    out = Path(out) if out is not None else p
    stats: dict[str, Any] = {"path": str(p)}
    if (p / MANIFEST).is_file():
        m = read_manifest(p)
        lengths = token_lengths(p, m)
        unit = "tokens"
        content = m["tokens"] - m["documents"]  # BOS markers are not text
        stats.update(
            documents=m["documents"],
            tokens=m["tokens"],
            bytes=m["bytes"],
            bytes_per_token=round(m["bytes"] / max(1, content), 4),
            sources=m["sources"],
        )
        docs_dir = Path(m.get("docs_dir", ""))
        if m.get("docs_dir") and docs_dir.is_dir() and any(docs_dir.glob(PATTERN)):
            d, _ = doc_dir_stats(docs_dir)
            stats.update(language_mix=d["language_mix"], language_counts=d["language_counts"])
    elif p.is_dir() and any(p.glob(PATTERN)):
        d, lengths = doc_dir_stats(p)
        unit = "characters"
        stats.update(d)
    else:
        raise ChatsmithError(
            f"{p}: neither a token-shard folder ({MANIFEST}) nor a document-shard folder ({PATTERN})"
        )
    if lengths.size:
        stats["length"] = {
            "unit": unit,
            "mean": round(float(lengths.mean()), 1),
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        }
    hist = out / "length_hist.png"
    save_histogram(lengths, unit, hist)
    stats["histogram"] = str(hist)
    write_json(out / "stats.json", stats)
    if not quiet:
        lines = [f"  {k:<16} {v}" for k, v in stats.items() if k not in ("sources", "language_counts")]
        log.info("stats:\n" + "\n".join(lines))
    return stats
