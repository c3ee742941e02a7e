"""Resumable HTTP(S) downloads of data shards: Range requests, sha256 checks, retries with backoff.

Bytes go to `NAME.part` first; a dropped connection or a killed process leaves the `.part`
file, and the next attempt (or the next run) asks the server only for the missing tail with
`Range: bytes=N-`. The file gets its final name only once it is complete and, when a checksum
is given, verified, so a name without `.part` always means a whole file. Only the standard
library is used (urllib): no extra dependency for something this small.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from chatsmith.common import log
from chatsmith.common.errors import ChatsmithError

CHUNK = 1 << 20
_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TOTAL = re.compile(r"bytes\s+\*/(\d+)")


@dataclass
class DownloadConfig:
    retries: int = 5  # attempts after the first one
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    timeout: float = 60.0  # seconds without data before an attempt fails


class _Retry(Exception):
    """A failure worth another attempt (network trouble, a 5xx, a short body)."""


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def url_filename(url: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise ChatsmithError(f"{url}: the URL names no file")
    return name


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, cfg: DownloadConfig | None = None) -> Path:
    """Fetch url to dest, resuming a previous `.part`; returns dest. Errors name the URL."""
    cfg = cfg or DownloadConfig()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha256 = sha256.lower() if sha256 else None
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest  # already complete
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _attempt(url, part, cfg.timeout)
            break
        except _Retry as e:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > cfg.retries:
                raise ChatsmithError(
                    f"{url}: download failed after {cfg.retries + 1} attempts ({e}); "
                    f"{have} bytes kept in {part}, run again to resume"
                ) from None
            delay = cfg.backoff * 2 ** (attempt - 1)
            log.warn(f"{url}: {e}; retrying in {delay:.1f}s from byte {have} (attempt {attempt + 1})")
            time.sleep(delay)
    if sha256 is not None:
        got = file_sha256(part)
        if got != sha256:
            part.unlink()
            raise ChatsmithError(
                f"{url}: sha256 mismatch (expected {sha256}, got {got}); the corrupt download was deleted"
            )
    os.replace(part, dest)
    return dest


def _attempt(url: str, part: Path, timeout: float) -> None:
    """One request: append the missing bytes to part; raise _Retry or ChatsmithError."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "chatsmith-data/1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            total = _expected_total(r, have)
            if r.status == 200 and have:  # the server ignored Range: start over
                have = 0
            with open(part, "ab" if have else "wb") as f:
                while block := r.read(CHUNK):
                    f.write(block)
                    have += len(block)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            m = _TOTAL.search(e.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == have:
                return  # the .part already holds the whole file
            part.unlink()  # the .part is longer than the file: it is not this file's prefix
            raise _Retry(f"HTTP 416 for byte {have}; restarting") from None
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        what = "not found" if e.code in (404, 410) else "refused"
        raise ChatsmithError(f"{url}: HTTP {e.code} {e.reason} ({what})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(e, http.client.IncompleteRead):
            reason = "connection closed early"
        raise _Retry(f"{type(e).__name__}: {reason}") from None
    if total is not None and have < total:
        raise _Retry(f"truncated: got {have} of {total} bytes")
    if total is not None and have > total:
        part.unlink()
        raise _Retry(f"got {have} bytes, more than the {total} announced; restarting")


def _expected_total(r: http.client.HTTPResponse, have: int) -> int | None:
    """The full file size, from Content-Range (206) or Content-Length (200); None if unknown."""
    if r.status == 206:
        m = _RANGE.search(r.headers.get("Content-Range", "") or "")
        if not m or int(m.group(1)) != have:
            raise _Retry(f"bad Content-Range {r.headers.get('Content-Range')!r} for byte {have}")
        return int(m.group(3)) if m.group(3) != "*" else None
    length = r.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download_all(
    urls: list[str], out_dir: Path, sha256: list[str] | None = None, cfg: DownloadConfig | None = None
) -> list[Path]:
    """Each URL to out_dir/<its file name>, in order; sha256, if given, has one digest per URL."""
    if sha256 and len(sha256) != len(urls):
        raise ChatsmithError(f"{len(sha256)} sha256 digests given for {len(urls)} URLs; give one per URL")
    out: list[Path] = []
    names: set[str] = set()
    for i, url in enumerate(urls):
        name = url_filename(url)
        if name in names:
            raise ChatsmithError(f"{url}: two URLs share the file name {name}")
        names.add(name)
        log.info(f"download {url}")
        out.append(download(url, Path(out_dir) / name, sha256[i] if sha256 else None, cfg))
    return out
