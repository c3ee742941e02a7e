"""A token folder: token shards, their `manifest.json` and a copy of the tokenizer that made them.

The one format pretraining reads, whoever wrote it: `chatsmith data tokenize`/`prepare` (the
documents of a prepared corpus, split into train and validation by a hash of their tokens in the
loader) or the demo (`write_token_folder`, with its validation documents in a shard of their own,
marked `"split": "val"` in the manifest). Because the folder carries `tokenizer.json`,
`chatsmith pretrain --data.tokens DIR` needs nothing else; a folder whose tokenizer is not the
run's is refused with the two fingerprints, never trained on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import write_json
from chatsmith.data.tokens.shards import dtype_for, write_shard
from chatsmith.tokenizer.bpe import BPETokenizer

MANIFEST = "manifest.json"
FORMAT = "chatsmith-token-shards/1"
TOKENIZER = "tokenizer.json"


def folder_manifest(manifests: list[dict[str, Any]], tok: BPETokenizer, **extra: Any) -> dict[str, Any]:
    """The folder's manifest: the sum over its shards' manifests, and the list of shards."""
    sources: Counter = Counter()
    for m in manifests:
        sources.update(m.get("sources", {}))
    return {
        "format": FORMAT,
        "tokenizer": tok.fingerprint(),
        "vocab_size": tok.vocab_size,
        "dtype": np.dtype(dtype_for(tok.vocab_size)).name,
        "bos_id": tok.bos_id,
        "documents": sum(m["documents"] for m in manifests),
        "tokens": sum(m["tokens"] for m in manifests),
        "bytes": sum(m.get("bytes", 0) for m in manifests),
        "empty_documents": sum(m.get("empty_documents", 0) for m in manifests),
        "bos_in_text": sum(m.get("bos_in_text", 0) for m in manifests),
        "sources": dict(sorted(sources.items())),
        **extra,
        "shards": [
            {
                "file": m["file"],
                "documents": m["documents"],
                "tokens": m["tokens"],
                "bytes": m.get("bytes", 0),
                **({"split": m["split"]} if "split" in m else {}),
            }
            for m in manifests
        ],
    }


def write_token_folder(
    out_dir: Path, tok: BPETokenizer, parts: Sequence[tuple[str, str, list[str]]]
) -> dict[str, Any]:
    """Tokenize in-memory texts into a token folder; parts are (shard name, split, texts)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    manifests = []
    for name, split, texts in parts:
        ids = [[t for t in d if t != tok.bos_id] for d in tok.encode_batch(texts)]
        nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        manifests.append(
            write_shard(
                out_dir / f"{name}.bin", ids, tok.bos_id, tok.vocab_size, tok.fingerprint(),
                bytes=nbytes, split=split,
            )
        )
    return finish_folder(out_dir, tok, manifests)


def finish_folder(
    out_dir: Path, tok: BPETokenizer, manifests: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The tokenizer's copy first, the manifest last: a folder with a manifest is complete."""
    tok.save(out_dir / TOKENIZER)
    manifest = folder_manifest(manifests, tok, **extra)
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(tok_dir: str | Path) -> dict[str, Any]:
    """The folder's manifest, checked: its format and that every shard it lists is there."""
    d = Path(tok_dir).expanduser()
    p = d / MANIFEST
    if not d.is_dir():
        raise ChatsmithError(f"{d} is not a folder: give the token folder `chatsmith data tokenize` wrote")
    if not p.is_file():
        raise ChatsmithError(f"{p} does not exist: tokenize the data first (`chatsmith data tokenize`)")
    try:
        m = json.loads(p.read_text())
    except ValueError as e:
        raise ChatsmithError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ChatsmithError(f"{p}: not a chatsmith token-shard manifest")
    missing = [s["file"] for s in m.get("shards", []) if not (d / s["file"]).is_file()]
    if missing:
        raise ChatsmithError(f"{d}: the manifest lists shards that are missing: {', '.join(missing[:5])}")
    return m


def folder_tokenizer(tok_dir: str | Path) -> BPETokenizer:
    """The tokenizer a folder carries; refused if it is not the one its manifest names."""
    d = Path(tok_dir).expanduser()
    m = read_manifest(d)
    if not (d / TOKENIZER).is_file():
        raise ChatsmithError(
            f"{d} has no {TOKENIZER} beside its manifest: re-run `chatsmith data tokenize` "
            "(it copies the tokenizer into the folder)"
        )
    tok = BPETokenizer.load(d / TOKENIZER)
    if tok.fingerprint() != m["tokenizer"]:
        raise ChatsmithError(
            f"{d}: its {TOKENIZER} ({tok.fingerprint()}) is not the tokenizer its shards were made with "
            f"({m['tokenizer']})"
        )
    return tok


def check_tokenizer(tok_dir: str | Path, tok: BPETokenizer, whose: str) -> None:
    """Refuse a folder tokenized by another tokenizer than `tok` (`whose`: where tok came from)."""
    m = read_manifest(tok_dir)
    if m["tokenizer"] != tok.fingerprint():
        raise ChatsmithError(
            f"{tok_dir} was tokenized with tokenizer {m['tokenizer']}, but {whose} uses "
            f"{tok.fingerprint()}; re-tokenize the data with that tokenizer or start a new run"
        )


def has_val_shards(m: dict[str, Any]) -> bool:
    return any(s.get("split") == "val" for s in m["shards"])


def bytes_per_token(m: dict[str, Any], split: str = "val") -> float:
    """UTF-8 bytes per text token (BOS excluded), for bits per byte: the split's own shards when
    the folder has them, else the whole folder (a hash-chosen subset has the same mix)."""
    shards = m["shards"]
    if has_val_shards(m):
        shards = [s for s in shards if s.get("split", "train") == split] or shards
    nbytes = sum(s.get("bytes", 0) for s in shards)
    text_tokens = sum(s["tokens"] - s["documents"] for s in shards)
    if nbytes <= 0 or text_tokens <= 0:
        raise ChatsmithError("the token folder's manifest records no bytes: bits per byte are unknown")
    return nbytes / text_tokens
