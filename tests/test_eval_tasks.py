"""The task file format: validation errors name file and line; converters from public formats."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.eval.converters import convert
from chatsmith.eval.generative import extract_answer, is_match
from chatsmith.eval.tasks import load_task


def write_lines(path, rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


MC = {"context": "Q?", "choices": ["a", "b", "c"], "gold": 1}


def test_loads_and_infers_types(tmp_path):
    write_lines(tmp_path / "mc.jsonl", [MC, {**MC, "gold": "c"}])
    t = load_task(tmp_path / "mc.jsonl")
    assert t.type == "multiple_choice" and t.name == "mc"
    assert [e["gold"] for e in t.examples] == [1, 2]  # a gold answer given as text becomes its index
    write_lines(
        tmp_path / "gen.jsonl", [{"task": {"name": "g", "extract": "gsm8k"}}, {"prompt": "1+1=", "answer": 2}]
    )
    g = load_task(tmp_path / "gen.jsonl")
    assert (g.type, g.name, g.config["extract"], g.examples[0]["answer"]) == ("generative", "g", "gsm8k", "2")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ({"choices": ["a", "b"], "gold": 0}, "missing field 'context'"),
        ({"context": "Q?", "choices": ["a", "b"]}, "missing field 'gold'"),
        ({**MC, "gold": 3}, "gold index 3 is outside the 3 choices"),
        ({**MC, "gold": -1}, "outside"),
        ({**MC, "gold": "d"}, "gold answer 'd' is not one of the choices"),
        ({**MC, "choices": ["only one"]}, "at least 2"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_example_names_file_and_line(tmp_path, bad_line, message):
    p = tmp_path / "broken.jsonl"
    write_lines(p, [MC, MC, bad_line, MC])
    with pytest.raises(ChatsmithError) as e:
        load_task(p)
    assert f"{p}:3:" in str(e.value)
    assert message in str(e.value)


def test_bad_headers_and_files(tmp_path):
    p = tmp_path / "h.jsonl"
    write_lines(p, [{"task": {"num_fewshots": 2}}, MC])
    with pytest.raises(ChatsmithError, match=r"h.jsonl:1: unknown task setting 'num_fewshots'"):
        load_task(p)
    write_lines(p, [{"task": {"type": "generative"}}, MC])
    with pytest.raises(ChatsmithError, match=r"h.jsonl:2: missing field 'prompt'"):
        load_task(p)
    write_lines(p, [MC, {"task": {"type": "multiple_choice"}}])
    with pytest.raises(ChatsmithError, match="header must be the first line"):
        load_task(p)
    write_lines(p, [{"question": "?"}])
    with pytest.raises(ChatsmithError, match="cannot tell the task type"):
        load_task(p)
    with pytest.raises(ChatsmithError, match="no task file"):
        load_task(tmp_path / "missing.jsonl")


def test_answer_extraction():
    assert extract_answer("so 12 + 3 = 15. #### 15", "gsm8k") == "15"
    assert extract_answer("The total is 1,517 apples.", "gsm8k") == "1,517"
    assert is_match(extract_answer("The total is 1,517 apples.", "last_number"), "1517")
    assert is_match("42.0", "42") and not is_match("41", "42") and not is_match(None, "42")
    assert extract_answer("\n  Paris\nis the answer", "first_line") == "Paris"
    assert extract_answer("answer: (B)", r"regex:\(([A-D])\)") == "B"


# ---- converters, each on a small file written in the public format ---------------------------
def test_arc_both_forms(tmp_path):
    ai2 = {
        "id": "Q1",
        "question": {
            "stem": "What melts ice?",
            "choices": [{"text": "heat", "label": "A"}, {"text": "cold", "label": "B"}],
        },
        "answerKey": "A",
    }
    flat = {
        "id": "Q2",
        "question": "Sky?",
        "choices": {"text": ["blue", "green", "red"], "label": ["1", "2", "3"]},
        "answerKey": "3",
    }
    write_lines(tmp_path / "ARC-Easy-Test.jsonl", [ai2, flat])
    t = load_task(convert("arc", tmp_path / "ARC-Easy-Test.jsonl", tmp_path / "arc.jsonl"))
    assert t.type == "multiple_choice" and len(t.examples) == 2
    assert t.examples[0]["context"] == "Question: What melts ice?\nAnswer:" and t.examples[0]["gold"] == 0
    assert t.examples[1]["choices"] == ["blue", "green", "red"] and t.examples[1]["gold"] == 2
    write_lines(tmp_path / "bad.jsonl", [{**ai2, "answerKey": "E"}])
    with pytest.raises(ChatsmithError, match=r"bad.jsonl:1: answerKey 'E'"):
        convert("arc", tmp_path / "bad.jsonl", tmp_path / "x.jsonl")


def test_hellaswag(tmp_path):
    row = {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "ctx_a": "Then, the man writes over the snow covering the window of a car.",
        "ctx_b": "a woman wearing winter clothes",
        "ctx": "...",
        "endings": ["stands next to the car [title] and waves.", "drives away.", "laughs.", "sleeps."],
        "label": "0",
        "split": "val",
    }
    write_lines(tmp_path / "hellaswag_val.jsonl", [row])
    t = load_task(convert("hellaswag", tmp_path / "hellaswag_val.jsonl", tmp_path / "hs.jsonl"))
    ex = t.examples[0]
    assert (
        ex["context"].startswith("Removing ice from car: Then, the man")
        and "A woman wearing" in ex["context"]
    )
    assert ex["choices"][0] == "stands next to the car. and waves." and ex["gold"] == 0


def test_mmlu_csv_folder(tmp_path):
    d = tmp_path / "test"
    d.mkdir()
    with open(d / "high_school_physics_test.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ["What is g?", "9.8 m/s2", "1 m/s", "0", "42", "A"],
                ["Unit of force?", "J", "N", "W", "Pa", "B"],
            ]
        )
    with open(d / "astronomy_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Closest star?", "Sirius", "Sun", "Vega", "Rigel", "B"]])
    t = load_task(convert("mmlu", d, tmp_path / "mmlu.jsonl", num_fewshot=1))
    assert len(t.examples) == 3 and t.config["num_fewshot"] == 1
    ex = t.examples[0]  # astronomy sorts first
    assert ex["context"].startswith(
        "The following are multiple choice questions (with answers) about astronomy."
    )
    assert "\nB. Sun\n" in ex["context"] and ex["context"].endswith("Answer:")
    assert ex["choices"] == ["A", "B", "C", "D"] and ex["gold"] == 1


def test_gsm8k_and_humaneval(tmp_path):
    write_lines(
        tmp_path / "gsm8k_test.jsonl",
        [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}],
    )
    g = load_task(convert("gsm8k", tmp_path / "gsm8k_test.jsonl", tmp_path / "g.jsonl", tools=True))
    assert g.type == "generative" and g.config["extract"] == "gsm8k" and g.config["tools"] is True
    assert g.examples[0]["answer"] == "7" and "<<" not in g.examples[0]["target"]
    he = {
        "task_id": "HumanEval/0",
        "prompt": "def add(a, b):\n",
        "canonical_solution": "    return a + b\n",
        "test": "def check(f):\n    assert f(1, 2) == 3\n",
        "entry_point": "add",
    }
    with gzip.open(tmp_path / "HumanEval.jsonl.gz", "wt") as f:
        f.write(json.dumps(he) + "\n")
    h = load_task(convert("humaneval", tmp_path / "HumanEval.jsonl.gz", tmp_path / "he.jsonl"))
    assert h.type == "code" and h.name == "HumanEval" and h.examples[0]["entry_point"] == "add"
    with pytest.raises(ChatsmithError, match="unknown benchmark format"):
        convert("squad", tmp_path / "g.jsonl", tmp_path / "x.jsonl")


def test_cli_convert_and_bad_task_file(tmp_path, tiny_tok, capsys):
    from chatsmith.checkpoint import save_checkpoint
    from chatsmith.cli import main
    from chatsmith.model.build import build_model
    from chatsmith.model.gpt import GPTConfig

    write_lines(tmp_path / "gsm.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    assert (
        main(
            [
                "eval",
                "--convert",
                "gsm8k",
                "--input",
                str(tmp_path / "gsm.jsonl"),
                "--out",
                str(tmp_path / "t.jsonl"),
            ]
        )
        == 0
    )
    assert load_task(tmp_path / "t.jsonl").examples[0]["answer"] == "4"
    save_checkpoint(
        tmp_path / "ckpt",
        build_model(GPTConfig(tiny_tok.vocab_size, 1, 32, 2, 2, 16, 64, 32), seed=0),
        tiny_tok,
        {},
    )
    write_lines(tmp_path / "broken.jsonl", [MC, {**MC, "gold": 7}])
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "ckpt"),
            "--tasks",
            str(tmp_path / "broken.jsonl"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'broken.jsonl'}:2: gold index 7" in err
