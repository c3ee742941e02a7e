"""Ingest: every input format into document shards; bad input is an error naming the file, or a skip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.cli import main as data_main
from chatsmith.data.corpus.docshards import iter_doc_batches
from chatsmith.data.corpus.ingest import ingest


def rows(d: Path) -> list[tuple[str, str, str]]:
    return [r for b in iter_doc_batches(d) for r in zip(b["text"], b["source"], b["id"])]


def write_hf_dataset(root: Path, texts: list[str], column: str = "text") -> None:
    """What `datasets.Dataset.save_to_disk` writes: Arrow IPC stream files plus state.json."""
    root.mkdir(parents=True)
    table = pa.table({column: texts, "label": list(range(len(texts)))})
    arrow = str(root / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        for batch in table.to_batches(max_chunksize=2):
            w.write_batch(batch)
    (root / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": "train"})
    )
    (root / "dataset_info.json").write_text("{}")


def good_inputs(d: Path) -> None:
    d.mkdir()
    (d / "a.txt").write_text("first block\n\n\nsecond block\n\n\n\n")
    (d / "b.jsonl").write_text('{"text": "json one", "id": "j1"}\n\n{"text": "json two"}\n')
    (d / "c.jsonl.gz").write_bytes(gzip.compress(b'{"text": "gz one"}\n'))
    pq.write_table(pa.table({"content": ["pq one", None, "pq two"]}), d / "d.parquet")


def test_every_format_is_read(tmp_path: Path) -> None:
    good_inputs(tmp_path / "in")
    write_hf_dataset(tmp_path / "hf", ["hf one", "hf two", "hf three"])
    dd = tmp_path / "hfdict"
    write_hf_dataset(dd / "train", ["train doc"])
    write_hf_dataset(dd / "test", ["test doc"])
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    report = ingest(
        [
            str(tmp_path / "in" / "a.txt"),
            str(tmp_path / "in" / "b.jsonl"),
            str(tmp_path / "in" / "c.jsonl.gz"),
            str(tmp_path / "hf"),
            str(dd),
        ],
        tmp_path / "docs",
        quiet=True,
    )
    got = rows(tmp_path / "docs")
    assert [t for t, _, _ in got] == [
        "first block",
        "second block",
        "json one",
        "json two",
        "gz one",
        "hf one",
        "hf two",
        "hf three",
        "train doc",
        "test doc",
    ]
    assert got[2] == ("json one", "b.jsonl", "j1") and got[3][2] == "b.jsonl:3"
    assert got[5][1] == "hf" and got[5][2] == "hf/data-00000-of-00001.arrow:0"
    assert got[-1][2] == "hfdict/test/data-00000-of-00001.arrow:0"
    assert report["documents"] == 10 and report["files"] == 5
    assert report["by_source"] == {"a.txt": 2, "b.jsonl": 2, "c.jsonl.gz": 1, "hf": 3, "hfdict": 2}
    assert json.loads((tmp_path / "docs" / "ingest_report.json").read_text()) == report
    # a configurable text field/column; null and empty texts are dropped and counted
    r2 = ingest([str(tmp_path / "in" / "d.parquet")], tmp_path / "docs2", text_field="content", quiet=True)
    assert [t for t, _, _ in rows(tmp_path / "docs2")] == ["pq one", "pq two"] and r2["empty_documents"] == 1


BAD = {
    "corrupt.parquet": (b"PAR1 this is not a parquet file", "not a readable parquet file"),
    "notext.parquet": (None, "no column 'text'"),
    "latin1.txt": ("café".encode("latin-1"), "not valid UTF-8"),
    "badline.jsonl": (b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "badline.jsonl:2: not valid UTF-8"),
    "notjson.jsonl": (b'{"text": "ok"}\nnot json\n', "notjson.jsonl:2: invalid JSON"),
    "nofield.jsonl": (b'{"body": "x"}\n', "no string field 'text'"),
    "bad.gz.jsonl.gz": (b"not gzip", "not a valid gzip file"),
}


def make_bad(d: Path, name: str) -> Path:
    content, _ = BAD[name]
    p = d / name
    if content is None:
        pq.write_table(pa.table({"body": ["x"]}), p)
    else:
        p.write_bytes(content)
    return p


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_errors_naming_the_file(tmp_path: Path, name: str) -> None:
    p = make_bad(tmp_path, name)
    with pytest.raises(ChatsmithError) as e:
        ingest([str(p)], tmp_path / "docs", quiet=True)
    assert str(p) in str(e.value) and BAD[name][1] in str(e.value)


def test_missing_paths_empty_folders_and_empty_datasets_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "state.json").write_text(json.dumps({"_data_files": []}))
    cases = [
        (tmp_path / "nope.txt", "does not exist"),
        (tmp_path / "empty", "holds no"),
        (tmp_path / "hf", "holds no .arrow files"),
    ]
    for path, needle in cases:
        with pytest.raises(ChatsmithError, match=needle) as e:
            ingest([str(path)], tmp_path / "docs", quiet=True)
        assert str(path) in str(e.value)
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(ChatsmithError, match="no documents found"):
        ingest([str(tmp_path / "blank.txt")], tmp_path / "docs", quiet=True)


def test_skip_bad_counts_every_skipped_file_and_record(tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    good_inputs(d)
    for name in BAD:
        make_bad(d, name)
    (tmp_path / "empty").mkdir()
    report = ingest(
        [str(d), str(tmp_path / "empty"), str(tmp_path / "missing")],
        tmp_path / "docs",
        skip_bad=True,
        quiet=True,
    )
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped_files"]}
    whole_file = {"corrupt.parquet", "notext.parquet", "latin1.txt", "bad.gz.jsonl.gz", "d.parquet"}
    assert set(skipped) == whole_file | {"empty", "missing"}  # d.parquet has no 'text' column
    assert report["skipped_records"] == 3  # badline.jsonl:2, notjson.jsonl:2, nofield.jsonl:1
    texts = [t for t, _, _ in rows(tmp_path / "docs")]
    good = ["first block", "second block", "json one", "json two", "gz one", "ok", "ok"]
    assert sorted(texts) == sorted(good)
    assert report["documents"] == 7


def test_cli_prints_one_line_naming_the_file_and_returns_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    p = make_bad(tmp_path, "notext.parquet")
    code = data_main(["data", "ingest", str(p), "--out", str(tmp_path / "docs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("chatsmith: error:") and str(p) in err[0]
    code = data_main(["data", "ingest", str(p), "--out", str(tmp_path / "docs"), "--text-field", "body"])
    assert code == 0 and [t for t, _, _ in rows(tmp_path / "docs")] == ["x"]


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "locked.txt"
    p.write_text("secret")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:  # root ignores chmod 000, so simulate the OS refusing
        if self == p:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ChatsmithError, match="cannot read \\(Permission denied\\)") as e:
        ingest([str(p)], tmp_path / "docs", quiet=True)
    assert str(p) in str(e.value)
    (tmp_path / "ok.txt").write_text("fine")
    report = ingest([str(p), str(tmp_path / "ok.txt")], tmp_path / "docs", skip_bad=True, quiet=True)
    assert report["documents"] == 1 and report["skipped_files"][0]["file"] == str(p)


def test_output_inside_a_source_folder_is_never_read(tmp_path: Path) -> None:
    from chatsmith.data.corpus.clean import clean_dir

    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("hello there")
    for _ in range(2):  # the second run must not ingest the first run's shards
        assert ingest([str(d)], d / "docs", quiet=True)["documents"] == 1
    assert rows(d / "docs") == [("hello there", "corpus", "a.txt:0")]
    with pytest.raises(ChatsmithError, match="another folder"):
        clean_dir(d / "docs", d / "docs", quiet=True)
