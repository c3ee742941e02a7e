"""Answer extraction and comparison: the one judgement eval scores with and RL rewards with.

Extraction (a task file's `extract`, docs/tasks.md): `gsm8k` takes the number after "####" and
falls back to the last number, as GSM8K's own answers are written; `last_number` the last
number in the reply; `first_line` the first non-empty line; `strip` the whole reply;
`regex:PATTERN` the first group (or whole match) of PATTERN. Numbers compare as numbers
("1,517" == "1517.0"), everything else as stripped text. A chat task's `check` is `contains`
(case-insensitive), `exact` or `last_number`.
"""

from __future__ import annotations

import re

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
CHAT_CHECKS = ("contains", "exact", "last_number")


def last_number(text: str) -> str | None:
    nums = _NUM.findall(text)
    return nums[-1] if nums else None


def extract_answer(text: str, how: str) -> str | None:
    if how == "gsm8k":
        m = re.search(r"####\s*(-?[\d,.]+)", text)
        return m.group(1) if m else last_number(text)
    if how == "last_number":
        return last_number(text)
    if how == "first_line":
        return next((ln.strip() for ln in text.splitlines() if ln.strip()), None)
    if how.startswith("regex:"):
        m = re.search(how[len("regex:") :], text)
        return (m.group(1) if m.groups() else m.group(0)) if m else None
    return text.strip()


def normalize(ans: str) -> str:
    a = ans.strip().rstrip(".。").replace(",", "")
    try:
        x = float(a)
    except ValueError:
        return ans.strip()
    return str(int(x)) if x == int(x) else str(x)


def is_match(pred: str | None, gold: str) -> bool:
    return pred is not None and normalize(pred) == normalize(gold)


def chat_check(how: str, gold: str, reply: str) -> bool:
    """A chat task's check of the reply the user reads (`contains`, `exact` or `last_number`)."""
    if how == "exact":
        return reply.strip() == gold.strip()
    if how == "last_number":
        return is_match(last_number(reply), gold)
    return gold.lower() in reply.lower()
