"""FineWeb-Edu shards on the Hugging Face hub, fetched through the resumable downloader.

Two layouts are known:
- `sample-10BT` (default): HuggingFaceFW/fineweb-edu, `sample/10BT/000_00000.parquet` ...
  `013_00000.parquet` (14 files, about 2 GB each; columns `text`, `id`, `url`, `score`, ...).
- `nanochat`: karpathy/fineweb-edu-100b-shuffle, `shard_00000.parquet` ... `shard_01822.parquet`
  (the pre-shuffled ~100B-token mix nanochat trains on; column `text`).

`base_url` replaces the hub address (a mirror, or a local server in tests); file names stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.download import DownloadConfig, download_all

HUB = "https://huggingface.co/datasets"


@dataclass(frozen=True)
class Layout:
    repo: str
    folder: str  # inside the dataset repository; "" for the top
    pattern: str  # file name with {i} for the shard index
    count: int  # number of shards the dataset has


LAYOUTS = {
    "sample-10BT": Layout("HuggingFaceFW/fineweb-edu", "sample/10BT", "{i:03d}_00000.parquet", 14),
    "nanochat": Layout("karpathy/fineweb-edu-100b-shuffle", "", "shard_{i:05d}.parquet", 1823),
}


def default_base_url(layout: str) -> str:
    lay = _layout(layout)
    base = f"{HUB}/{lay.repo}/resolve/main"
    return f"{base}/{lay.folder}" if lay.folder else base


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ChatsmithError(f"unknown FineWeb layout '{name}'; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def fineweb_urls(
    n: int, base_url: str | None = None, layout: str = "sample-10BT", start: int = 0
) -> list[str]:
    """URLs of shards start .. start+n-1 of a layout."""
    lay = _layout(layout)
    if n < 1:
        raise ChatsmithError(f"--shards must be at least 1 (got {n})")
    if start < 0 or start + n > lay.count:
        raise ChatsmithError(f"{layout} has {lay.count} shards; shards {start}..{start + n - 1} do not exist")
    base = (base_url or default_base_url(layout)).rstrip("/")
    return [f"{base}/{lay.pattern.format(i=i)}" for i in range(start, start + n)]


def download_fineweb(
    n: int,
    out_dir: Path,
    base_url: str | None = None,
    layout: str = "sample-10BT",
    start: int = 0,
    cfg: DownloadConfig | None = None,
) -> list[Path]:
    """Download n FineWeb-Edu parquet shards into out_dir (resuming any `.part` files)."""
    return download_all(fineweb_urls(n, base_url, layout, start), Path(out_dir), cfg=cfg)
