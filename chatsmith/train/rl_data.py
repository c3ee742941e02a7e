"""What `chatsmith rl` trains on: a task file (docs/tasks.md) or the built-in task mixture.

Either way RL gets the same three things: training examples, held-out examples and the
task's judge (check + reward). A task file is read by eval's reader, so a malformed line is
an error naming the file and the line. Generative and chat tasks are scored by eval's answer
extraction (tasks/answers.py); code tasks (HumanEval's format) by running the reply's code
and the task's tests in eval's sandbox. Held-out examples come from `--val-data`, or else a
stable hash of each prompt keeps about 15 % of the file aside (at most rl.eval_problems).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatsmith.common.config import Config
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info
from chatsmith.eval.code_eval import program
from chatsmith.eval.code_sandbox import run_program
from chatsmith.eval.tasks import Task, load_task
from chatsmith.tasks.answer_task import AnswerTask, example_of, held_out_split
from chatsmith.tasks.common import Example

_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.S)


@dataclass
class CodeTask:
    """A code task's judge: a reply passes when its code, completed into the task's program
    (eval's `program`: prompt + completion + tests + check), passes in the sandbox."""

    name: str
    timeout_s: float = 5.0
    memory_mb: int = 1024

    def check(self, ex: Example, reply: str) -> bool:
        m = _FENCE.search(reply)
        code = m.group(1) if m else reply
        row = ex.meta["row"]
        # A reply that writes the whole function replaces the prompt; else it is the body.
        whole = f"def {row['entry_point']}" in code
        src = program({**row, "prompt": ""}, code) if whole else program(row, code)
        return run_program(src, self.timeout_s, self.memory_mb).passed

    def reward(self, ex: Example, reply: str) -> float:
        return float(self.check(ex, reply))


def code_example(task: Task, row: dict[str, Any]) -> Example:
    """A HumanEval problem asked as a chat turn; its canonical solution, if any, is the answer shown."""
    ask = [{"role": "user", "content": f"Complete this Python function.\n```python\n{row['prompt']}```"}]
    solution = row["prompt"] + row.get("canonical_solution", "")
    messages = [*ask, {"role": "assistant", "content": f"```python\n{solution}```"}]
    keep = {k: row[k] for k in ("prompt", "test", "entry_point")}
    return Example(task.name, messages, ask, "", {"where": f"{task.path}:{row['_line']}", "row": keep})


def task_examples(path: str | Path) -> tuple[list[Example], Any]:
    """Every example of a task file and the task's judge (answer check, or the sandbox for code)."""
    task = load_task(Path(path).expanduser())
    name = task.name
    if task.type == "code":
        judge: Any = CodeTask(name, task.config["timeout_s"], task.config["memory_mb"])
        return [code_example(task, row) for row in task.examples], judge
    examples = [example_of(name, task.type, row, f"{task.path}:{row['_line']}") for row in task.examples]
    return examples, AnswerTask(name, task.config["extract"])


def builtin_data(cfg: Config, words: list[str] | None = None) -> tuple[list[Example], list[Example], Any]:
    """The built-in RL data: 5,000 prompts mixed over the demo's tasks (tasks/mixture.py RL_WEIGHTS),
    judged by the mixture's check and reward; rl.eval_problems held-out word problems measure it."""
    from chatsmith.tasks import mixture as task_mixture
    from chatsmith.tasks.mixture import rl_problems
    from chatsmith.tasks.word_problems import word_problems

    train = rl_problems(5000, cfg.run.seed + 5, "train", cfg.identity, words or [])
    return train, word_problems(cfg.rl.eval_problems, cfg.run.seed + 6, "heldout"), task_mixture


def rl_data(
    cfg: Config, data: str | None, val_data: str | None, words: list[str] | None = None
) -> tuple[list[Example], list[Example], Any]:
    """(training examples, held-out examples, judge) for `chatsmith rl [--data F [--val-data F]]`."""
    if not data:
        if val_data:
            raise ChatsmithError("--val-data needs --data (the built-in word problems hold out their own)")
        return builtin_data(cfg, words)
    examples, judge = task_examples(data)
    if val_data:
        train, (val, _) = examples, task_examples(val_data)
    else:
        train, val = held_out_split(examples, cfg.rl.eval_problems)
    if not train:
        raise ChatsmithError(f"{data}: no examples left to train on after holding out {len(val)}")
    info(f"[rl] task '{judge.name}': {len(train)} training prompts, {len(val)} held out")
    return train, val, judge
