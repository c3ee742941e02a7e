"""Cleaning: Chinese and English boilerplate, pinyin glosses, normalisation, Gopher rules, the report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from chatsmith.data.corpus.clean import CleanConfig, CleanReport, clean_batch, clean_dir, clean_document
from chatsmith.data.corpus.docshards import DocShardWriter, iter_doc_batches
from chatsmith.data.corpus.quality import QualityConfig, quality_issue, script_of

# Long enough (>= 50 CJK characters) to pass the quality rules on its own.
BODY_TW = (
    "今年本市的經濟持續成長，新興產業帶動就業機會增加，"
    "市政府也宣布將投入更多資源於公共運輸與教育建設，"
    "希望讓市民的生活品質進一步提升，並吸引更多年輕人回到家鄉工作與創業。"
)
BODY_CN = (
    "今年本市经济持续增长，新兴产业带动就业机会增加，"
    "市政府也宣布将投入更多资源用于公共交通和教育建设，"
    "希望让市民的生活质量进一步提升，并吸引更多年轻人回到家乡工作和创业。"
)
NOTICES = [
    "未經授權,嚴禁轉載",
    "未經授權，嚴禁轉載。",
    "未经授权，严禁转载",
    "未经授权,严禁转载！",
    "更多內容,點擊下方關注",
    "更多內容，點擊下方關注",
    "更多内容，点击下方关注",
    "更多内容,点击下方关注",
    "公眾號轉載請先在後台留言",
    "公众号转载请先在后台留言。",
]
CONTROL = (
    "人工智能(AI)的發展在 (2023) 年進入新的階段，"
    "研究人員以函數 f(x) = x^2 為例，說明模型如何學習簡單的規律，"
    "並討論這些方法在教育、醫療與交通等領域的應用前景與可能的風險，"
    "以及社會應該如何面對這些變化。"
)


def cfg() -> CleanConfig:
    return CleanConfig()


@pytest.mark.parametrize("notice", NOTICES)
@pytest.mark.parametrize("body", [BODY_TW, BODY_CN])
def test_chinese_notices_are_removed_inline_and_on_their_own_line(notice: str, body: str) -> None:
    for text in (body + notice, body + "\n" + notice, notice + "\n" + body):
        r = CleanReport()
        out = clean_document(text, cfg(), r)
        assert out == body, (text, out)
        assert r.changed["boilerplate_phrases"] >= 1


def test_pinyin_glosses_are_removed() -> None:
    text = BODY_TW + "\n公司的發(fā)展很快，新任總監(jiān)去年剛從大學畢業(yè)，負責研發(fā)部門。"
    r = CleanReport()
    out = clean_document(text, cfg(), r)
    assert out == BODY_TW + "\n公司的發展很快，新任總監去年剛從大學畢業，負責研發部門。"
    assert r.changed["pinyin_glosses"] == 4


def test_legitimate_parentheses_are_untouched() -> None:
    for text in (CONTROL, CONTROL.replace("(", "（").replace(")", "）"), BODY_TW + "北京(Beijing)與上海。"):
        r = CleanReport()
        assert clean_document(text, cfg(), r) == text
        assert not r.changed and not r.removed


def test_english_boilerplate_lines_go_but_prose_about_copyright_stays() -> None:
    prose = (
        "Copyright law protects the expression of an idea rather than the idea itself, and the "
        "courts have spent a long time deciding where that line should be drawn for software, "
        "music and the many other kinds of work that people create and share with each other "
        "every day, which is why the rules keep changing."
    )
    text = "\n".join(
        [
            prose,
            "Copyright © 2023 Example Media Inc. All rights reserved.",
            "This article was originally published on Example News.",
            "Reprinted with permission of the author.",
            "Follow us on Twitter and Facebook!",
            "Subscribe to our newsletter for more stories.",
        ]
    )
    r = CleanReport()
    assert clean_document(text, cfg(), r) == prose
    assert r.changed["boilerplate_lines"] == 5


def test_normalisation_nfc_and_control_characters_are_counted() -> None:
    good = (
        "The café on the corner of the street has been open since the morning, and the people of "
        "the town come to drink coffee, read the paper and talk with their friends about the "
        "weather and the news of the day before they go to work in the shops and offices that "
        "line the main road."
    )
    decomposed = good.replace("é", "e\u0301")
    r = CleanReport()
    dirty = decomposed.replace("town", "to\x00wn\u200b").replace("\n", "\r\n")
    assert clean_document(dirty, cfg(), r) == good
    assert r.changed["nfc"] == 1 and r.changed["control_chars"] == 2


GOOD = (
    "The history of the city begins with a small settlement on the river, where farmers and "
    "traders met to exchange grain, wool and tools. Over the centuries the settlement grew into "
    "a market town, and the town became a city with a cathedral, a university and a busy port. "
    "Today the old streets are full of visitors who come to see the buildings and to learn how "
    "the people of the past lived and worked."
)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("The cat sat on the mat and that was all.", "too_short"),
        (GOOD + " #tag" * 20, "symbol_ratio"),
        ("\n".join(f"- item {i} of the list and the rest" for i in range(60)), "bullet_lines"),
        (
            "\n".join(f"line {i} of the story goes on and on for a while and then..." for i in range(60)),
            "ellipsis_lines",
        ),
        (GOOD + "\n" + "\n".join(["click the button to have it"] * 30), "dup_lines"),
        (" ".join(["the", "of", "and", "to"] * 40), "mean_word_length"),
        (GOOD + " " + " ".join(str(1000 + i) for i in range(400)), "alpha_words"),
        (" ".join(f"word{i}x" for i in range(80)), "stop_words"),
        (GOOD + " " + " ".join(["with the"] * 60), "top_2gram"),
        (GOOD + " " + GOOD.split(".")[0] + " " + GOOD.split(".")[1] + " " + GOOD.split(".")[0], "dup_5gram"),
    ],
)
def test_gopher_rules_each_fire(text: str, rule: str) -> None:
    assert quality_issue(GOOD, QualityConfig()) is None
    assert quality_issue(text, QualityConfig()) == rule


def test_thresholds_come_from_the_config() -> None:
    short = "A small dog ran across the green field and barked at the birds in the trees."
    assert quality_issue(short, QualityConfig()) == "too_short"
    assert quality_issue(short, QualityConfig(min_words=5)) is None


def test_cjk_documents_skip_the_word_rules() -> None:
    assert script_of(BODY_TW) == "cjk" and script_of(GOOD) == "latin"
    assert quality_issue(BODY_TW, QualityConfig()) is None  # no English stop words, no spaces: still kept
    assert quality_issue(BODY_TW + "\n" + BODY_TW + "\n" + BODY_TW, QualityConfig()) == "dup_lines"


def test_clean_dir_writes_the_report_and_keeps_the_columns(tmp_path: Path) -> None:
    w = DocShardWriter(tmp_path / "docs", row_group=3)
    rows = [
        (GOOD, "en"),
        (BODY_TW + "未經授權,嚴禁轉載", "zh"),
        ("too short", "en"),
        (CONTROL, "zh"),
        ("", "x"),
    ]
    for i, (t, s) in enumerate(rows):
        w.add(t, s, f"d{i}")
    w.close()
    report = clean_dir(tmp_path / "docs", tmp_path / "clean", quiet=True)
    assert json.loads((tmp_path / "clean" / "clean_report.json").read_text()) == report
    assert report["documents_in"] == 5 and report["documents_out"] == 3
    assert report["removed"] == {"empty": 1, "too_short": 1}
    assert report["changed"]["boilerplate_phrases"] == 1
    assert report["config"]["rules"]["min_words"] == 50
    out = [r for b in iter_doc_batches(tmp_path / "clean") for r in zip(b["text"], b["source"], b["id"])]
    assert out == [(GOOD, "en", "d0"), (BODY_TW, "zh", "d1"), (CONTROL, "zh", "d3")]
    assert "removed: too_short" in CleanReport(documents_in=1, removed=Counter(too_short=1)).table()


def test_clean_batch_with_workers_matches_serial(tmp_path: Path) -> None:
    w = DocShardWriter(tmp_path / "docs", row_group=2)
    for i in range(6):
        w.add(GOOD + f" Part {i}." if i % 2 else BODY_CN + "更多内容，点击下方关注", "s", str(i))
    w.close()
    serial = clean_dir(tmp_path / "docs", tmp_path / "a", quiet=True)
    parallel = clean_dir(tmp_path / "docs", tmp_path / "b", workers=2, quiet=True)
    assert serial == parallel
    a = [t for b in iter_doc_batches(tmp_path / "a") for t in b["text"]]
    b = [t for b in iter_doc_batches(tmp_path / "b") for t in b["text"]]
    assert a == b and len(a) == 6
    kept, _ = clean_batch({"text": ["x"], "source": ["s"], "id": ["1"]}, CleanConfig(quality=False))
    assert kept["text"] == ["x"]
