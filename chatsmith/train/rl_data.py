"""What `chatsmith rl` trains on: a task file (docs/tasks.md) or the built-in word problems.

Either way RL gets the same three things: training examples, held-out examples and the
task's judge (check + reward). A task file is read by eval's reader, so a malformed line is
an error naming the file and the line, and scored by eval's answer extraction
(tasks/answers.py); held-out examples come from `--val-data`, or else a stable hash of each
prompt keeps about 15 % of the file aside (at most rl.eval_problems of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatsmith.common.config import Config
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info
from chatsmith.eval.tasks import load_task
from chatsmith.tasks.answer_task import AnswerTask, example_of, held_out_split
from chatsmith.tasks.common import Example


def task_examples(path: str | Path) -> tuple[list[Example], AnswerTask]:
    """Every example of a generative or chat task file, and the task's judge."""
    task = load_task(Path(path).expanduser())
    name = task.name
    examples = [example_of(name, task.type, row, f"{task.path}:{row['_line']}") for row in task.examples]
    return examples, AnswerTask(name, task.config["extract"])


def word_problem_data(cfg: Config) -> tuple[list[Example], list[Example], Any]:
    """The built-in word problems (tasks/word_problems.py): 5,000 to train on, rl.eval_problems held out."""
    from chatsmith.tasks import word_problems as task
    from chatsmith.tasks.word_problems import word_problems

    train = word_problems(5000, cfg.run.seed + 5, "train")
    return train, word_problems(cfg.rl.eval_problems, cfg.run.seed + 6, "heldout"), task


def rl_data(cfg: Config, data: str | None, val_data: str | None) -> tuple[list[Example], list[Example], Any]:
    """(training examples, held-out examples, judge) for `chatsmith rl [--data F [--val-data F]]`."""
    if not data:
        if val_data:
            raise ChatsmithError("--val-data needs --data (the built-in word problems hold out their own)")
        return word_problem_data(cfg)
    examples, judge = task_examples(data)
    if val_data:
        train, (val, _) = examples, task_examples(val_data)
    else:
        train, val = held_out_split(examples, cfg.rl.eval_problems)
    if not train:
        raise ChatsmithError(f"{data}: no examples left to train on after holding out {len(val)}")
    info(f"[rl] task '{judge.name}': {len(train)} training prompts, {len(val)} held out")
    return train, val, judge
