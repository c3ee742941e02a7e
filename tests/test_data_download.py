"""Downloads against a local HTTP server: resume with Range, checksums, 404, truncation, FineWeb URLs."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.docshards import iter_doc_batches
from chatsmith.data.corpus.download import DownloadConfig, download
from chatsmith.data.corpus.fineweb import download_fineweb, fineweb_urls
from chatsmith.data.corpus.ingest import ingest

FAST = DownloadConfig(retries=3, backoff=0.01, timeout=10)


def parquet_bytes(texts: list[str], start: int = 0) -> bytes:
    buf = io.BytesIO()
    ids = [f"<urn:uuid:{start + i}>" for i in range(len(texts))]
    pq.write_table(pa.table({"text": texts, "id": ids, "score": [3.0] * len(texts)}), buf)
    return buf.getvalue()


class Server:
    """Serves `files` (path -> bytes); `drop_first` paths cut the first GET half way; `always_drop` always."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_first: set[str] = set()
        self.always_drop: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng and not server.ignore_range else 0
                first = sum(1 for p, _ in server.requests if p == self.path) == 1
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                part = body[start:]
                if self.path in server.always_drop or (first and self.path in server.drop_first):
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_dropped_connection_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    body = parquet_bytes([f"document number {i} " * 20 for i in range(300)])
    server.files["/shard.parquet"] = body
    server.drop_first.add("/shard.parquet")
    digest = hashlib.sha256(body).hexdigest()
    out = download(f"{server.url}/shard.parquet", tmp_path / "shard.parquet", digest, FAST)
    assert out.read_bytes() == body
    assert not (tmp_path / "shard.parquet.part").exists()
    ranges = [r for p, r in server.requests if p == "/shard.parquet"]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == f"bytes={len(body) - (len(body) - len(body) // 2)}-"  # exactly the missing tail
    # a complete file with the right checksum is not fetched again
    download(f"{server.url}/shard.parquet", tmp_path / "shard.parquet", digest, FAST)
    assert len(server.requests) == 2


def test_a_part_file_left_by_a_killed_run_is_resumed(server: Server, tmp_path: Path) -> None:
    body = bytes(range(256)) * 400
    server.files["/x.bin"] = body
    (tmp_path / "x.bin.part").write_bytes(body[:1000])
    download(f"{server.url}/x.bin", tmp_path / "x.bin", cfg=FAST)
    assert (tmp_path / "x.bin").read_bytes() == body
    assert server.requests == [("/x.bin", "bytes=1000-")]


def test_wrong_checksum_is_rejected_with_a_clear_message(server: Server, tmp_path: Path) -> None:
    server.files["/bad.parquet"] = b"these are not the bytes you expected"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChatsmithError, match="sha256 mismatch") as e:
        download(f"{server.url}/bad.parquet", tmp_path / "bad.parquet", wrong, FAST)
    assert "/bad.parquet" in str(e.value) and wrong in str(e.value)
    assert not (tmp_path / "bad.parquet").exists() and not (tmp_path / "bad.parquet.part").exists()


def test_404_is_a_clear_error_without_retries(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ChatsmithError, match="404") as e:
        download(f"{server.url}/missing.parquet", tmp_path / "missing.parquet", cfg=FAST)
    assert "missing.parquet" in str(e.value) and "not found" in str(e.value)
    assert len(server.requests) == 1


def test_a_file_that_stays_truncated_fails_after_the_retries(server: Server, tmp_path: Path) -> None:
    server.files["/t.bin"] = b"x" * 4096
    server.always_drop.add("/t.bin")
    with pytest.raises(ChatsmithError, match="failed after 4 attempts") as e:
        download(f"{server.url}/t.bin", tmp_path / "t.bin", cfg=FAST)
    assert "/t.bin" in str(e.value) and "run again to resume" in str(e.value)
    assert not (tmp_path / "t.bin").exists() and (tmp_path / "t.bin.part").stat().st_size < 4096
    assert all(r is not None for _, r in server.requests[1:])  # every retry asked only for the rest


def test_fineweb_urls_follow_the_hub_layout() -> None:
    urls = fineweb_urls(3)
    assert urls[0] == (
        "https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT/000_00000.parquet"
    )
    assert urls[2].endswith("/sample/10BT/002_00000.parquet")
    assert fineweb_urls(1, layout="nanochat", start=7)[0] == (
        "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_00007.parquet"
    )
    with pytest.raises(ChatsmithError, match="14 shards"):
        fineweb_urls(15)


def test_fineweb_through_the_downloader_then_ingest(server: Server, tmp_path: Path) -> None:
    for i in range(2):
        server.files[f"/mirror/sample/10BT/{i:03d}_00000.parquet"] = parquet_bytes(
            [f"shard {i} text {j}" for j in range(5)], start=10 * i
        )
    paths = download_fineweb(2, tmp_path / "raw", base_url=f"{server.url}/mirror/sample/10BT", cfg=FAST)
    assert [p.name for p in paths] == ["000_00000.parquet", "001_00000.parquet"]
    report = ingest([str(tmp_path / "raw")], tmp_path / "docs", quiet=True)
    assert report["documents"] == 10
    rows = [r for b in iter_doc_batches(tmp_path / "docs") for r in zip(b["text"], b["source"], b["id"])]
    assert rows[0] == ("shard 0 text 0", "raw", "<urn:uuid:0>") and rows[-1][2] == "<urn:uuid:14>"


def test_ingest_reads_urls_with_checksums(server: Server, tmp_path: Path) -> None:
    body = parquet_bytes(["from the web", "second document"])
    server.files["/a.parquet"] = body
    report = ingest(
        [f"{server.url}/a.parquet"],
        tmp_path / "docs",
        sha256=[hashlib.sha256(body).hexdigest()],
        download_cfg=FAST,
        quiet=True,
    )
    assert report["documents"] == 2 and report["by_source"] == {"a.parquet": 2}
    with pytest.raises(ChatsmithError, match="404"):
        ingest([f"{server.url}/gone.parquet"], tmp_path / "docs2", download_cfg=FAST, quiet=True)
    skipped = ingest(
        [f"{server.url}/gone.parquet", f"{server.url}/a.parquet"],
        tmp_path / "docs3",
        skip_bad=True,
        download_cfg=FAST,
        quiet=True,
    )
    assert skipped["documents"] == 2 and len(skipped["skipped_files"]) == 1
    assert "gone.parquet" in skipped["skipped_files"][0]["file"]


def test_a_server_that_ignores_range_gets_a_fresh_whole_file(server: Server, tmp_path: Path) -> None:
    body = b"0123456789" * 500
    server.files["/r.bin"] = body
    server.ignore_range = True
    (tmp_path / "r.bin.part").write_bytes(b"0123")
    download(f"{server.url}/r.bin", tmp_path / "r.bin", hashlib.sha256(body).hexdigest(), FAST)
    assert (tmp_path / "r.bin").read_bytes() == body
