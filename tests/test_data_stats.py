"""Stats (language mix, bytes per token, histogram PNG), the `data` CLI pipeline, the bench's JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.data.cli import add_data_parser, apply_sets, bench_data_main, run_data
from chatsmith.data.corpus.clean import CleanConfig
from chatsmith.data.corpus.docshards import DocShardWriter
from chatsmith.data.stats import corpus_stats
from chatsmith.tokenizer.bpe import BPETokenizer

EN = (
    "The history of the city begins with a small settlement on the river, where farmers and traders "
    "met to exchange grain, wool and tools. Over the centuries the settlement grew into a market town, "
    "and the town became a city with a cathedral, a university and a busy port."
)
ZH = "機器學習是人工智能的一個分支，它研究計算機如何從數據中自動學習規律，並把學到的規律用於預測與決策。"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="chatsmith")
    add_data_parser(p.add_subparsers(dest="verb", required=True))
    return p.parse_args(argv)


def test_document_stats_language_mix_and_histogram(tmp_path: Path) -> None:
    w = DocShardWriter(tmp_path / "docs")
    for i in range(6):
        w.add(EN + f" Part {i}.", "en", str(i))
    for i in range(3):
        w.add(ZH * (i + 1), "zh", f"z{i}")
    w.add("12345 67890 !!!", "x", "n")
    w.close()
    s = corpus_stats(tmp_path / "docs", tmp_path / "out", quiet=True)
    assert s["documents"] == 10 and s["language_counts"] == {"cjk": 3, "latin": 6, "other": 1}
    assert s["language_mix"]["latin"] == 0.6 and s["length"]["unit"] == "characters"
    png = Path(s["histogram"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == s
    with pytest.raises(ChatsmithError, match="neither"):
        corpus_stats(tmp_path / "out", quiet=True)


def test_cli_pipeline_prepare_then_stats(tmp_path: Path, tiny_tok: BPETokenizer) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [{"text": EN + f" Chapter {i} tells the story of the people of the town."} for i in range(30)]
    lines += [{"text": EN + " Chapter 3 tells the story of the people of the town."}]  # an exact copy
    lines += [{"text": ZH * 2 + "更多內容,點擊下方關注"}, {"text": "too short"}]
    (raw / "a.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
    tiny_tok.save(tmp_path / "tok" / "tokenizer.json")
    out = tmp_path / "run"
    args = parse(
        [
            "data",
            "prepare",
            str(raw),
            "--out",
            str(out),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--workers",
            "2",
            "--dedup-set",
            "near=false",
        ]
    )
    assert run_data(args) == 0
    clean = json.loads((out / "clean" / "clean_report.json").read_text())
    dedup = json.loads((out / "dedup" / "dedup_report.json").read_text())
    stats = json.loads((out / "tokens" / "stats.json").read_text())
    assert clean["removed"] == {"too_short": 1} and clean["changed"]["boilerplate_phrases"] == 1
    assert dedup["exact_duplicates"] == 1 and dedup["near_duplicates"] == 0
    assert stats["documents"] == 31 and stats["bytes_per_token"] > 1.0
    assert stats["language_counts"] == {"cjk": 1, "latin": 30}
    assert (out / "tokens" / "length_hist.png").is_file()
    assert run_data(parse(["data", "stats", str(out / "dedup")])) == 0


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = run_data(
        parse(
            [
                "data",
                "tokenize",
                "--tokenizer",
                str(tmp_path / "nope"),
                "--in",
                str(tmp_path),
                "--out",
                str(tmp_path / "t"),
            ]
        )
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no tokenizer" in err[0] and str(tmp_path / "nope") in err[0]
    assert (
        run_data(
            parse(
                [
                    "data",
                    "clean",
                    "--in",
                    str(tmp_path),
                    "--out",
                    str(tmp_path / "c"),
                    "--set",
                    "rules.min_wordz=3",
                ]
            )
        )
        == 2
    )
    assert "unknown key" in capsys.readouterr().err


def test_set_overrides_are_typed() -> None:
    sets = ["rules.min_words=20", "pinyin=false", "rules.max_top_ngram_chars=0.3,0.2,0.1"]
    cfg = apply_sets(CleanConfig(), sets)
    assert cfg.rules.min_words == 20 and cfg.pinyin is False
    assert cfg.rules.max_top_ngram_chars == (0.3, 0.2, 0.1)
    with pytest.raises(ChatsmithError, match="expected int"):
        apply_sets(CleanConfig(), ["rules.min_words=many"])


def test_bench_prints_json_on_its_last_line(capsys: pytest.CaptureFixture) -> None:
    assert bench_data_main(["--mb", "0.2", "--vocab-size", "600", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("ingest_clean_dedup_mb_s", "tokenize_pipeline_mb_s", "encode_batch_mb_s", "tokenize_ratio"):
        assert result[key] > 0, key
    assert result["tokenize_workers"] == 2 and result["goal_ratio"] == 0.8 and result["tokens"] > 0
