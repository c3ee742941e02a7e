"""A task given as a file of prompts and answers (docs/tasks.md's generative and chat types).

`chatsmith rl --data gsm8k.jsonl` trains on such a file. Each example's prompt is asked as a
user turn (a chat example's conversation as it stands), and a reply is right when the task's
check says so: the answer extracted as the header's `extract` says equals the example's,
exactly as `chatsmith eval` scores the file (tasks/answers.py). The built-in word problems
(word_problems.py) are the other such task: made by a generator instead of read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatsmith.common.errors import ChatsmithError
from chatsmith.tasks.answers import CHAT_CHECKS, chat_check, extract_answer, is_match
from chatsmith.tasks.common import Example, split_of


@dataclass
class AnswerTask:
    """The check and reward of a prompt-and-answer task (the Task protocol of tasks/common.py)."""

    name: str
    extract: str = "last_number"  # generative examples; a chat example carries its own `check`

    def check(self, ex: Example, reply: str) -> bool:
        how = ex.meta.get("check")
        if how:
            return chat_check(how, ex.answer, reply)
        return is_match(extract_answer(reply, self.extract), ex.answer)

    def reward(self, ex: Example, reply: str) -> float:
        """RL's reward for one answer: 1 when the check passes, 0 otherwise."""
        return float(self.check(ex, reply))


def example_of(name: str, kind: str, row: dict[str, Any], where: str) -> Example:
    """One validated row of a task file (eval/tasks.py reads and checks it) as an Example."""
    if kind == "generative":
        prompt = [{"role": "user", "content": row["prompt"]}]
        meta: dict[str, Any] = {"where": where}
        shown = row.get("target") or row["answer"]
    elif kind == "chat":
        how = row.get("check", "contains")
        if how not in CHAT_CHECKS:
            allowed = ", ".join(CHAT_CHECKS)
            raise ChatsmithError(f"{where}: check '{how}' cannot score RL answers; use {allowed}")
        prompt, meta, shown = list(row["messages"]), {"where": where, "check": how}, row["answer"]
    else:
        raise ChatsmithError(f"{where}: a {kind} task cannot be RL data (a generative, chat or code one can)")
    messages = [*prompt, {"role": "assistant", "content": str(shown)}]
    return Example(name, messages, prompt, str(row["answer"]), meta)


def held_out_split(examples: list[Example], limit: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out): a stable hash of each prompt puts it on one side (common.split_of);
    at most `limit` held-out examples are kept aside, the rest of them train."""
    train, held = [], []
    for ex in examples:
        key = "\n".join(str(m.get("content", "")) for m in ex.prompt)
        (held if split_of(ex.task, key) == "heldout" and len(held) < limit else train).append(ex)
    return train, held
