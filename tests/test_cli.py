"""The command line: a tiny end-to-end speedrun, chat -p, and clear errors for bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatsmith.checkpoint import save_checkpoint
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig

TINY = [
    "--data.corpus_mb=0.25",
    "--data.chat_train=400",
    "--data.chat_val=40",
    "--tokenizer.vocab_size=600",
    "--tokenizer.train_mb=0.2",
    "--model.depth=1",
    "--model.seq_len=256",
    "--pretrain.steps=6",
    "--pretrain.batch_size=4",
    "--pretrain.seq_len=64",
    "--pretrain.compile=off",
    "--pretrain.eval_every=3",
    "--sft.steps=6",
    "--sft.batch_size=4",
    "--sft.seq_len=192",
    "--sft.eval_every=3",
    "--eval.arithmetic=3",
    "--eval.counting=3",
    "--eval.identity=2",
    "--eval.other=2",
    "--eval.base_limit=1",
    "--eval.max_new_tokens=24",
    "--dpo.steps=2",
    "--dpo.batch_size=2",
    "--dpo.train_pairs=20",
    "--dpo.val_pairs=6",
    "--dpo.eval_every=2",
    "--rm.steps=2",
    "--rm.batch_size=2",
    "--rm.eval_every=2",
    "--rl.steps=2",
    "--rl.batch_size=2",
    "--rl.group_size=2",
    "--rl.pass_k=2",
    "--rl.max_new_tokens=16",
    "--rl.eval_problems=4",
    "--rl.eval_every=2",
]


def cli(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHATSMITH_HOME": str(home), "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "chatsmith", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def assert_clean_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("chatsmith: error:"), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    r = cli("speedrun", "--preset", "demo", "--run.name=tiny", *TINY, home=home)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "chatsmith chat --model" in r.stdout
    return home / "runs" / "tiny"


def test_speedrun_writes_report_checkpoints_and_plot(tiny_run: Path) -> None:
    for f in (
        "report.md",
        "loss.png",
        "metrics.jsonl",
        "eval.json",
        "tokenizer/tokenizer.json",
        "base/model.safetensors",
        "sft/model.safetensors",
        "data/pretrain_train.bin",
    ):
        assert (tiny_run / f).is_file(), f
    report = (tiny_run / "report.md").read_text()
    assert "Arithmetic via calculator" in report and "| pretrain |" in report and "loss.png" in report
    assert not list(tiny_run.glob("*.tmp")), "a temporary checkpoint was left behind"


def test_same_seed_gives_the_same_figures(tiny_run: Path, tmp_path: Path) -> None:
    r = cli("speedrun", "--preset", "demo", "--run.name=tiny", *TINY, home=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    again = tmp_path / "runs" / "tiny"

    timing = ("tok", "sec", "mfu", "eta", "mem", "time", "elapsed", "step_s", "_s")

    def figures(run: Path) -> list:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [
            {
                k: round(v, 6) if isinstance(v, float) else v
                for k, v in r.items()
                if not any(w in k for w in timing)
            }
            for r in rows
        ]

    first = figures(tiny_run)
    assert {r["stage"] for r in first} >= {"pretrain", "sft", "dpo", "rm", "rl"}
    assert figures(again) == first

    def evals(run: Path) -> dict:
        ev = json.loads((run / "eval.json").read_text())
        return {stage: {t: v.get("metrics") for t, v in r["tasks"].items()} for stage, r in ev.items()}

    assert set(evals(tiny_run)) >= {"base", "sft", "dpo", "rl"}
    assert evals(again) == evals(tiny_run)


def test_chat_one_prompt(tiny_run: Path) -> None:
    r = cli(
        "chat",
        "--model",
        str(tiny_run),
        "-p",
        "What is 37 * 41?",
        "--max-tokens",
        "16",
        "--verbose",
        "--compile",
        "off",  # the compiled default is tested in test_engine_compiled; here, the command's wiring
        home=tiny_run.parent.parent,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_unknown_preset(tmp_path: Path) -> None:
    assert_clean_error(cli("speedrun", "--preset", "nosuch", home=tmp_path), "nosuch", "demo")


def test_unknown_override_key(tmp_path: Path) -> None:
    assert_clean_error(cli("speedrun", "--model.dpeth=3", home=tmp_path), "model.dpeth", "depth")


def test_missing_corpus_path(tmp_path: Path) -> None:
    assert_clean_error(cli("speedrun", f"--data.corpus={tmp_path / 'nope'}", home=tmp_path), "does not exist")


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("\n\n")
    assert_clean_error(cli("speedrun", f"--data.corpus={tmp_path / 'corpus'}", home=tmp_path), "empty")


def _checkpoint(tok, path: Path) -> Path:
    cfg = GPTConfig(
        vocab_size=tok.vocab_size,
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=64,
        seq_len=64,
    )
    save_checkpoint(path, build_model(cfg, seed=0), tok, {"stage": "sft", "step": 0})
    return path


def test_checkpoint_with_a_different_tokenizer(tiny_tok, tiny_run: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tiny_tok, tmp_path / "ckpt")
    (ckpt / "tokenizer.json").write_bytes((tiny_run / "tokenizer" / "tokenizer.json").read_bytes())
    assert_clean_error(cli("chat", "--model", str(ckpt), "-p", "hi", home=tmp_path), "tokenizer")


def test_corrupted_checkpoint(tiny_tok, tmp_path: Path) -> None:
    ckpt = _checkpoint(tiny_tok, tmp_path / "ckpt")
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_clean_error(cli("chat", "--model", str(ckpt), "-p", "hi", home=tmp_path), "corrupted")


def test_missing_checkpoint(tmp_path: Path) -> None:
    assert_clean_error(
        cli("chat", "--model", str(tmp_path / "none"), "-p", "hi", home=tmp_path), "no checkpoint"
    )


def test_tokenizer_train_verb(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "hello world, the quick brown fox.\n\n\n你好，世界。\n\n\ndef f(x):\n    return x\n" * 30
    )
    r = cli(
        "tokenizer",
        "train",
        "--input",
        str(corpus),
        "--vocab-size",
        "300",
        "--out",
        str(tmp_path / "tok"),
        home=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    assert_clean_error(
        cli(
            "tokenizer", "train", "--input", str(tmp_path / "missing"), "--out", str(tmp_path), home=tmp_path
        ),
        "does not exist",
    )


# One parse per verb, with its required arguments; each must land on a handler.
VERB_ARGS = {
    "speedrun": [],
    "pretrain": [],
    "tokenizer": ["train", "--input", "x", "--out", "y"],
    "export": ["--model", "m", "out"],
    "import": ["src", "--out", "o"],
    "bench": ["peak"],
    "data": ["stats", "d"],
    "eval": [],
    "report": [],
    "sft": [],
    "dpo": [],
    "rm": [],
    "rl": [],
    "serve": [],
    "keys": ["list"],
    "chat": [],
}


def test_every_verb_registers_its_handler() -> None:
    from chatsmith.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(verbs) == list(VERB_ARGS)
    for verb, rest in VERB_ARGS.items():
        args = parser.parse_args([verb, *rest])
        assert callable(args.func), verb
        takes = getattr(args, "takes_overrides", False)
        assert takes == (verb in ("speedrun", "pretrain", "tokenizer", "sft", "dpo", "rm", "rl")), verb


def test_verbs_without_a_config_refuse_overrides(capsys: pytest.CaptureFixture) -> None:
    from chatsmith.cli import main

    assert main(["keys", "list", "--model.depth=3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["chatsmith: error: 'keys' takes no config overrides (got --model.depth=3)"]
