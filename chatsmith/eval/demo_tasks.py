"""The demo's task files, derived from its synthetic data so that every stage gets every task.

Written into RUN/eval/tasks/ in the ordinary task format (docs/tasks.md), rebuilt the same
from the run's config.json (seed, identity, eval sizes) and data/words.json each time:
- chat: held-out synthetic conversations (identity, arithmetic and counting through tools,
  spelling, instructions, multi-turn), answered greedily through the chat format;
- mc / mc_chat: multiple choice (sums, the next letter, spelling, identity) as plain text
  (what a base model can do) and as a chat turn;
- arith_calc / arith_direct: two- and three-digit arithmetic with and without the calculator;
- word_problems_unseen: one-step word problems in phrasings no stage trains on (GSM8K style),
  calculator allowed: a probe of transfer, which the demo's model does not reach (its chat
  subtask `word_problems` is the trained multi-step kind).
Only held-out keys are used (tasks.common.split_of), so no question was seen in training.
"""

from __future__ import annotations

import json
import random
from itertools import zip_longest
from pathlib import Path
from typing import Any

from chatsmith.common.config import IdentityConfig
from chatsmith.common.errors import ChatsmithError
from chatsmith.eval.tasks import write_task
from chatsmith.tasks.common import NAMES, split_of
from chatsmith.tasks.mixture import EVAL_TASKS, generators

# Questions per synthetic chat subtask: a cap on the run's eval sizes. 100 a subtask is what it
# takes to tell a real move of 10-15 points from noise (report_change); 16 could not.
CHAT_CAP = 100
N_MC = 16  # per kind of multiple-choice question
N_ARITH = 24
N_WORD = 16


def _held_out(rng: random.Random, task: str, make: Any) -> Any:
    while True:
        key, item = make(rng)
        if split_of(task, key) == "heldout":
            return item


def _chat_examples(cfg: dict[str, Any], words: list[str]) -> list[dict[str, Any]]:
    ident = IdentityConfig(**cfg.get("identity", {}))
    gens = generators(ident, words)
    seed, sizes = cfg["run"]["seed"], cfg.get("eval", {})
    groups = []
    for i, (task, field) in enumerate(EVAL_TASKS.items()):
        n = min(int(sizes.get(field, CHAT_CAP)), CHAT_CAP)
        rng = random.Random(seed * 7919 + i)  # as DemoData.eval_examples draws them
        exs = [gens[task](rng, "heldout") for _ in range(n)]
        groups.append(
            [
                {
                    "messages": e.prompt,
                    "answer": e.answer,
                    "check": "synthetic",
                    "subtask": e.task,
                    "meta": e.meta,
                }
                for e in exs
            ]
        )
    # Interleaved, so a limit on the number of examples keeps every subtask.
    return [e for row in zip_longest(*groups) for e in row if e is not None]


def _choices(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], int]:
    opts = [right, *list(dict.fromkeys(w for w in wrong if w != right))[:3]]
    rng.shuffle(opts)
    return opts, opts.index(right)


def _misspell(rng: random.Random, w: str) -> list[str]:
    i = rng.randrange(len(w) - 1)
    swapped = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    dropped = w[:i] + w[i + 1 :]
    doubled = w[: i + 1] + w[i] + w[i + 1 :]
    return ["-".join(x) for x in (swapped, dropped, doubled)]


def _mc_questions(seed: int, words: list[str], ident: IdentityConfig) -> list[tuple[str, list[str], int]]:
    rng = random.Random(seed * 31 + 5)
    out = []
    for _ in range(N_MC):
        x, _, y = _held_out(
            rng, "arithmetic", lambda r: ((k := (r.randint(10, 99), "+", r.randint(10, 99))), k)
        )
        wrong = [str(x + y + d) for d in rng.sample([-10, -2, -1, 1, 2, 10, 11], 3)]
        out.append((f"What is {x} + {y}?", *_choices(rng, str(x + y), wrong)))
        c = rng.choice("abcdefghijklmnopqrstuvwxy")
        wrong = [chr(ord("a") + (ord(c) - ord("a") + d) % 26) for d in (2, -1, 3)]
        out.append(
            (f'What letter comes after "{c}" in the alphabet?', *_choices(rng, chr(ord(c) + 1), wrong))
        )
        w = _held_out(rng, "spelling", lambda r: ((x := r.choice([w for w in words if len(w) >= 4])), x))
        out.append((f'How do you spell "{w}"?', *_choices(rng, "-".join(w), _misspell(rng, w))))
        q = rng.choice(["What is your name?", "Who are you?", "Who made you?", "Introduce yourself."])
        right = f"I'm {ident.name}, an AI assistant made by {ident.maker}."
        wrong = [
            "I'm ChatGPT, an AI assistant made by OpenAI.",
            "I'm Claude, an AI assistant made by Anthropic.",
            "I'm Gemini, an AI assistant made by Google.",
        ]
        out.append((q, *_choices(rng, right, wrong)))
    return out


def _arith(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed * 31 + 7)
    out = []
    for _ in range(N_ARITH):
        a, op, b = _held_out(
            rng, "arithmetic", lambda r: ((k := (r.randint(10, 999), r.choice("+-*"), r.randint(10, 99))), k)
        )
        out.append((f"What is {a} {op} {b}?", str({"+": a + b, "-": a - b, "*": a * b}[op])))
    return out


ITEMS = ["apples", "books", "coins", "stamps", "marbles", "pencils", "cards", "shells"]


def _word_problems(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed * 31 + 11)
    out = []
    for _ in range(N_WORD):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        a, b = rng.randint(12, 400), rng.randint(2, 60)
        kind = rng.randrange(3)
        if kind == 0:
            q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
        elif kind == 1:
            a = max(a, b + 1)
            q, ans = f"{name} had {a} {item} and gave away {b}. How many {item} are left?", a - b
        else:
            q, ans = f"{name} buys {b} boxes with {a} {item} in each box. How many {item} is that?", a * b
        out.append((q, str(ans)))
    return out


def write_demo_tasks(run_dir: Path) -> list[Path]:
    """Write the demo's task files for a run; returns their paths (bpb is added by the caller)."""
    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        words = json.loads((run_dir / "data" / "words.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ChatsmithError(
            f"{run_dir} is not a demo run folder (config.json, data/words.json): {e}"
        ) from None
    seed = int(cfg["run"]["seed"])
    ident = IdentityConfig(**cfg.get("identity", {}))
    out = run_dir / "eval" / "tasks"
    mcq = _mc_questions(seed, words, ident)
    arith = _arith(seed)
    chat_head = {"max_new_tokens": int(cfg.get("eval", {}).get("max_new_tokens", 96))}
    return [
        write_task(
            out / "chat.jsonl", {"name": "chat", "type": "chat", **chat_head}, _chat_examples(cfg, words)
        ),
        write_task(
            out / "mc.jsonl",
            {"name": "mc", "type": "multiple_choice", "description": "demo multiple choice, plain text"},
            [{"context": f"Question: {q}\nAnswer:", "choices": c, "gold": g} for q, c, g in mcq],
        ),
        write_task(
            out / "mc_chat.jsonl",
            {"name": "mc_chat", "type": "multiple_choice", "format": "chat"},
            [{"context": q, "choices": c, "gold": g} for q, c, g in mcq],
        ),
        write_task(
            out / "arith_calc.jsonl",
            {
                "name": "arith_calc",
                "type": "generative",
                "format": "chat",
                "tools": True,
                "max_new_tokens": 48,
            },
            [{"prompt": q, "answer": a} for q, a in arith],
        ),
        write_task(
            out / "arith_direct.jsonl",
            {"name": "arith_direct", "type": "generative", "format": "chat", "max_new_tokens": 32},
            [{"prompt": q, "answer": a} for q, a in arith],
        ),
        write_task(
            out / "word_problems_unseen.jsonl",
            {
                "name": "word_problems_unseen",
                "type": "generative",
                "format": "chat",
                "tools": True,
                "extract": "gsm8k",
                "max_new_tokens": 48,
            },
            [{"prompt": q, "answer": a} for q, a in _word_problems(seed)],
        ),
    ]
