"""The stages' data in the ecosystem's formats, and steps from epochs: each loader covers an
epoch's rows once across ranks, the loop sizes every stage the same way, conversation and
preference sets load from JSONL, Parquet and saved HF datasets, and RL reads a task file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatsmith.common.config import RLConfig, TrainConfig
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.chat.chat_jsonl import read_conversations
from chatsmith.data.chat.epochs import EpochOrder
from chatsmith.data.chat.packing import SFTLoader
from chatsmith.data.chat.preferences import EncodedPair, PairLoader, read_preferences
from chatsmith.tasks.common import Example
from chatsmith.train.loop import steps_from_epochs
from chatsmith.train.rl_data import rl_data

CONV = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


@pytest.mark.parametrize(("n", "batch", "world"), [(12, 3, 2), (10, 2, 1), (7, 1, 3)])
def test_ranks_together_read_every_row_once_an_epoch(n: int, batch: int, world: int) -> None:
    order = EpochOrder(n, seed=5)
    steps = n // (batch * world)
    seen = [i for s in range(steps) for r in range(world) for i in order.take(s, batch, r, world)]
    assert len(seen) == len(set(seen)) == steps * batch * world
    if steps * batch * world == n:
        assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_epochs_give_the_same_steps_per_row_for_every_stage_and_world(world: int) -> None:
    """24 rows, 2 a rank: 1 epoch is 12 steps on 1 rank and 12 / W on W ranks (DPO and RM
    once divided by the batch alone, so W ranks trained W epochs)."""
    rows = np.zeros((24, 9), dtype=np.int64)
    sft = SFTLoader(rows, rows[:, 1:], 2, seed=0, rank=0, world=world)
    pairs = PairLoader([EncodedPair(([1, 2], [0, 1]), ([1, 3], [0, 1]))] * 24, 2, 0, 0, 0, world)
    for loader in (sft, pairs):
        cfg = TrainConfig(epochs=1.0, batch_size=2, seq_len=8)
        steps_from_epochs("x", cfg, loader, world)
        assert cfg.steps == 12 // world
    cfg = TrainConfig(epochs=0.5, batch_size=2, seq_len=8, total_batch_tokens=2 * 8 * world * 2)
    steps_from_epochs("x", cfg, sft, world)  # 2 micro-steps a step
    assert cfg.steps == math.ceil(12 / (2 * world * 2))


def test_epochs_need_a_loader_that_counts_rows() -> None:
    with pytest.raises(ChatsmithError, match=r"set x\.steps"):
        steps_from_epochs("x", TrainConfig(epochs=1.0), object(), 1)
    cfg = TrainConfig(epochs=0.0, steps=7)
    steps_from_epochs("x", cfg, object(), 1)
    assert cfg.steps == 7


def smoltalk_rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ],
            "source": "test",
        }
        for i in range(n)
    ]


def save_hf_dataset(folder: Path, table: pa.Table) -> Path:
    """What datasets' save_to_disk writes: Arrow IPC stream files named in state.json."""
    folder.mkdir()
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": name}]}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def test_conversations_load_from_parquet_and_a_saved_dataset(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(smoltalk_rows(5))
    pq.write_table(table, tmp_path / "smoltalk.parquet")
    from_parquet = read_conversations(tmp_path / "smoltalk.parquet")
    from_hf = read_conversations(save_hf_dataset(tmp_path / "ds", table))
    assert [c.messages for c in from_parquet] == [c.messages for c in from_hf]
    assert from_parquet[3].messages[1] == {"role": "assistant", "content": "answer 3"}
    assert from_parquet[3].source == f"{tmp_path / 'smoltalk.parquet'}:row 4"


def test_a_bad_parquet_row_is_named(tmp_path: Path) -> None:
    rows = smoltalk_rows(3)
    rows[1]["messages"] = [{"role": "user", "content": "no answer"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(ChatsmithError, match=r"bad\.parquet:row 2: .*no assistant message"):
        read_conversations(tmp_path / "bad.parquet")


def test_preferences_with_an_implicit_prompt(tmp_path: Path) -> None:
    """UltraFeedback-style rows: chosen and rejected are whole conversations that share the prompt."""
    user = {"role": "user", "content": "2 + 2?"}
    rows = [
        {
            "chosen": [user, {"role": "assistant", "content": "4"}],
            "rejected": [user, {"role": "assistant", "content": "5"}],
            "score_chosen": 9.0,
        }
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "uf.parquet")
    (pair,) = read_preferences(tmp_path / "uf.parquet")
    assert pair.prompt == [user]
    assert pair.chosen == [{"role": "assistant", "content": "4"}]
    assert pair.rejected == [{"role": "assistant", "content": "5"}]


def gsm8k_file(path: Path, n: int, bad_line: int = 0) -> Path:
    lines = [json.dumps({"task": {"name": "sums", "extract": "gsm8k"}})]
    for i in range(n):
        row = {"prompt": f"What is {i} + {i}?", "answer": str(2 * i), "target": f"{i}+{i}. #### {2 * i}"}
        lines.append(json.dumps({"prompt": row["prompt"]} if i + 2 == bad_line else row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rl_task_file_trains_and_holds_out_and_scores_like_eval(tmp_path: Path) -> None:
    from chatsmith.common.config import Config

    cfg = Config(rl=RLConfig(eval_problems=10))
    train, val, task = rl_data(cfg, str(gsm8k_file(tmp_path / "g.jsonl", 200)), None)
    assert 0 < len(val) <= 10 and len(train) + len(val) == 200
    assert {ex.answer for ex in train}.isdisjoint({ex.answer for ex in val})
    ex = train[0]
    assert ex.prompt == [{"role": "user", "content": ex.prompt[0]["content"]}]
    assert task.check(ex, f"so it is #### {ex.answer}") and task.reward(ex, f"{ex.answer}.0") == 1.0
    assert task.reward(Example("sums", [], [], "4"), "#### 5 then 4") == 0.0  # gsm8k: after ####


def test_rl_task_file_with_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    from chatsmith.common.config import Config

    path = gsm8k_file(tmp_path / "g.jsonl", 6, bad_line=4)
    with pytest.raises(ChatsmithError, match=rf"{path}:4: missing field 'answer'"):
        rl_data(Config(), str(path), None)


def test_rl_code_task_scores_replies_in_the_sandbox(tmp_path: Path) -> None:
    from chatsmith.common.config import Config

    row = {
        "task_id": "t/0",
        "prompt": "def add(a, b):\n",
        "canonical_solution": "    return a + b\n",
        "test": "def check(f):\n    assert f(2, 3) == 5\n",
        "entry_point": "add",
    }
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(json.dumps({**row, "task_id": f"t/{i}"}) for i in range(3)) + "\n")
    train, _, task = rl_data(Config(), str(path), str(path))
    ex = train[0]
    assert "def add(a, b):" in ex.prompt[0]["content"]
    assert task.reward(ex, "```python\ndef add(a, b):\n    return a + b\n```") == 1.0  # the whole function
    assert task.check(ex, "    return a + b\n")  # the body after the prompt
    assert not task.check(ex, "```python\ndef add(a, b):\n    return a - b\n```")
