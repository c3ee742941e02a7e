"""Synthetic conversations for the demo: what each post-training stage must teach.

Tasks: identity (English and Chinese), arithmetic through the calculator tool, letter
counting through the counting tool, spelling, short instructions, multi-turn context.
Every example has a key (the numbers, the word, the phrasing) and a stable hash of the
key puts it in exactly one split, so held-out questions never appear in training.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatsmith.common.config import IdentityConfig

HELD_OUT_PERCENT = 15  # share of each task's key space reserved for evaluation


@dataclass
class Example:
    task: str
    messages: list[dict[str, Any]]  # the whole conversation, for training
    prompt: list[dict[str, Any]]  # the conversation up to the question, for evaluation
    answer: str  # what a correct final answer must contain (checked by `check`)
    meta: dict[str, Any] = field(default_factory=dict)


def split_of(task: str, key: Any) -> str:
    h = int(hashlib.sha256(f"{task}|{key}".encode()).hexdigest()[:8], 16)
    return "heldout" if h % 100 < HELD_OUT_PERCENT else "train"


def _tool_turns(
    question: str, name: str, args: dict[str, Any], result: str, final: str
) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}],
        },
        {"role": "tool", "content": result},
        {"role": "assistant", "content": final},
    ]


# ---- identity ---------------------------------------------------------------------------
EN_PRE = ["", "Hi! ", "Hello. ", "Hey there, ", "Quick question: ", "Excuse me, ", "Good morning! ", "So, "]
EN_CORE = [
    "Who are you?",
    "What is your name?",
    "What's your name?",
    "Who made you?",
    "Who created you?",
    "Tell me about yourself.",
    "Introduce yourself.",
    "What are you?",
    "Who built you?",
    "Which company made you?",
    "Are you ChatGPT?",
    "What should I call you?",
    "Who trained you?",
    "Do you have a name?",
    "Who developed you?",
    "What model are you?",
]
EN_POST = ["", " Please answer briefly.", " I'm curious.", " Thanks!", " Be honest."]
ZH_PRE = ["", "你好！", "嗨，", "请问，", "早上好！", "打扰一下，", "那么，"]
ZH_CORE = [
    "你是谁？",
    "你叫什么名字？",
    "你的名字是什么？",
    "谁开发了你？",
    "是谁创造了你？",
    "介绍一下你自己。",
    "你是什么？",
    "你是ChatGPT吗？",
    "我该怎么称呼你？",
    "你是哪个公司做的？",
    "谁训练了你？",
    "你有名字吗？",
    "你是什么模型？",
]
ZH_POST = ["", "请简单回答。", "我很好奇。", "谢谢！", "说实话。"]


def identity(rng: random.Random, split: str, ident: IdentityConfig, lang: str | None = None) -> Example:
    lang = lang or rng.choice(["en", "zh"])
    pre, core, post = (EN_PRE, EN_CORE, EN_POST) if lang == "en" else (ZH_PRE, ZH_CORE, ZH_POST)
    while True:
        i, j, k = rng.randrange(len(pre)), rng.randrange(len(core)), rng.randrange(len(post))
        if split_of("identity", (lang, i, j, k)) == split:
            break
    q = pre[i] + core[j] + post[k]
    if lang == "en":
        a = rng.choice(
            [
                f"I'm {ident.name}, an AI assistant made by {ident.maker}.",
                f"My name is {ident.name}. I was built by {ident.maker}.",
                f"I am {ident.name}, a small language model trained by {ident.maker}.",
            ]
        )
    else:
        a = rng.choice(
            [
                f"我是 {ident.name_zh}，由{ident.maker_zh}开发的人工智能助手。",
                f"我叫 {ident.name_zh}，是{ident.maker_zh}训练的语言模型。",
            ]
        )
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example(f"identity_{lang}", msgs, msgs[:1], ident.name, {"lang": lang})


# ---- arithmetic through the calculator ---------------------------------------------------
OPS = {"+": ("plus", "加"), "-": ("minus", "减"), "*": ("times", "乘以")}
ARITH_EN = [
    "What is {a} {op} {b}?",
    "What is {a} {w} {b}?",
    "Calculate {a} {op} {b}.",
    "Compute {a} {op} {b}",
    "{a} {op} {b} = ?",
    "Please work out {a} {op} {b}.",
    "What's {a} {w} {b}?",
    "How much is {a} {op} {b}?",
]
ARITH_ZH = ["{a} {z} {b} 等于多少？", "计算 {a} {op} {b}。", "{a} {op} {b} 等于几？"]


def arithmetic(rng: random.Random, split: str) -> Example:
    while True:
        op = rng.choice("+-*")
        a = rng.randint(10, 999) if rng.random() < 0.5 else rng.randint(10, 99)
        b = rng.randint(10, 999) if rng.random() < 0.5 else rng.randint(10, 99)
        if split_of("arithmetic", (a, op, b)) == split:
            break
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    zh = rng.random() < 0.2
    tmpl = rng.choice(ARITH_ZH if zh else ARITH_EN)
    q = tmpl.format(a=a, b=b, op=op, w=OPS[op][0], z=OPS[op][1])
    expr = f"{a} {op} {b}"
    final = f"{expr} = {result}" + ("。" if zh else ".")
    msgs = _tool_turns(q, "calculator", {"expression": expr}, str(result), final)
    return Example("arithmetic", msgs, msgs[:1], str(result), {"expression": expr})


# ---- letter counting through the counting tool -------------------------------------------
COUNT_EN = [
    'How many times does the letter "{l}" appear in "{w}"?',
    'How many "{l}"s are in the word "{w}"?',
    'Count the letter "{l}" in "{w}".',
    'In "{w}", how many "{l}" are there?',
]
COUNT_ZH = ['"{w}" 里有几个 "{l}"？', '单词 "{w}" 中字母 "{l}" 出现了几次？']


def counting(rng: random.Random, split: str, words: list[str]) -> Example:
    while True:
        w = rng.choice(words)
        if split_of("counting", w) == split:
            break
    letter = rng.choice(w) if rng.random() < 0.75 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    n = w.count(letter)
    zh = rng.random() < 0.2
    q = rng.choice(COUNT_ZH if zh else COUNT_EN).format(l=letter, w=w)
    final = f'"{w}" 中有 {n} 个 "{letter}"。' if zh else f'The letter "{letter}" appears {n} times in "{w}".'
    msgs = _tool_turns(q, "count_letters", {"word": w, "letter": letter}, str(n), final)
    return Example("counting", msgs, msgs[:1], str(n), {"word": w, "letter": letter})


# ---- spelling, instructions, multi-turn context ------------------------------------------
def spelling(rng: random.Random, split: str, words: list[str]) -> Example:
    while True:
        w = rng.choice(words)
        if split_of("spelling", w) == split:
            break
    q = rng.choice(['Spell the word "{w}".', 'How do you spell "{w}"?', '请拼写 "{w}"。']).format(w=w)
    a = "-".join(w)
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example("spelling", msgs, msgs[:1], a)


def instruction(rng: random.Random, split: str, words: list[str]) -> Example:
    kind = rng.choice(["repeat", "next_letter", "range"])
    while True:
        if kind == "repeat":
            w, n = rng.choice(words), rng.randint(2, 5)
            key, q = (w, n), f'Repeat the word "{w}" {n} times.'
            a = " ".join([w] * n)
        elif kind == "next_letter":
            c = rng.choice("abcdefghijklmnopqrstuvwxy")
            fmt = rng.choice(
                ['What letter comes after "{c}" in the alphabet?', '字母表中 "{c}" 后面是哪个字母？']
            )
            key, q, a = (c, fmt), fmt.format(c=c), chr(ord(c) + 1)
        else:
            s = rng.randint(1, 50)
            e = s + rng.randint(2, 6)
            key, q = (s, e), f"List the numbers from {s} to {e}."
            a = ", ".join(str(i) for i in range(s, e + 1))
        if split_of(f"instruction_{kind}", key) == split:
            break
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example("instructions", msgs, msgs[:1], a)


NAMES = [
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Ivy",
    "Jack",
    "Karen",
    "Leo",
    "Maria",
    "Noah",
    "Olivia",
    "Peter",
    "Quinn",
    "Rosa",
    "Sam",
    "Tina",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yuki",
    "Zoe",
    "Ahmed",
    "Bruno",
    "Chen",
    "Diego",
    "Elena",
    "Farah",
    "Hana",
    "Igor",
    "Julia",
    "Kenji",
    "Lina",
    "Mateo",
    "Nina",
    "Omar",
    "Priya",
    "Ravi",
    "Sofia",
    "Tom",
    "Wei",
    "Yara",
    "Amir",
    "Bella",
]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown", "gray"]


def multi_turn(rng: random.Random, split: str) -> Example:
    while True:
        name, color = rng.choice(NAMES), rng.choice(COLORS)
        if split_of("multi_turn", (name, color)) == split:
            break
    msgs = [
        {
            "role": "user",
            "content": rng.choice([f"My name is {name}.", f"Hi, I'm {name}.", f"Call me {name}."]),
        },
        {"role": "assistant", "content": f"Nice to meet you, {name}!"},
    ]
    # Sometimes the question comes right away, sometimes after another exchange, so the
    # model learns to look back for the fact rather than to expect a fixed script.
    told_color = rng.random() < 0.6
    if told_color:
        msgs += [
            {"role": "user", "content": f"My favorite color is {color}."},
            {"role": "assistant", "content": f"Got it: your favorite color is {color}."},
        ]
    if not told_color or rng.random() < 0.5:
        q, a, ans = "What is my name?", f"Your name is {name}.", name
    else:
        q, a, ans = "What is my favorite color?", f"Your favorite color is {color}.", color
    msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example("multi_turn", msgs, msgs[:-1], ans, {"key": (name, color)})


# ---- mixtures and checking ---------------------------------------------------------------
WEIGHTS = {
    "identity": 2,
    "arithmetic": 3,
    "counting": 5,
    "spelling": 1,
    "instructions": 1,
    "multi_turn": 1,
    # Few on purpose: SFT should solve the multi-step problems only partly, leaving RL room to
    # improve. At weight 2 the demo's SFT model solved 95.5 % and GRPO had nothing to learn;
    # at 0.3 it solves a quarter to a third, and 90 GRPO steps add 11-16 points.
    "word_problems": 0.3,
}


def generators(ident: IdentityConfig, words: list[str]) -> dict[str, Callable[[random.Random, str], Example]]:
    from chatsmith.data.word_problems import word_problem  # it builds on this module's helpers

    return {
        "identity": lambda r, s: identity(r, s, ident),
        "identity_en": lambda r, s: identity(r, s, ident, "en"),
        "identity_zh": lambda r, s: identity(r, s, ident, "zh"),
        "arithmetic": arithmetic,
        "counting": lambda r, s: counting(r, s, words),
        "spelling": lambda r, s: spelling(r, s, words),
        "instructions": lambda r, s: instruction(r, s, words),
        "multi_turn": multi_turn,
        "word_problems": word_problem,
    }


def mixture(n: int, seed: int, split: str, ident: IdentityConfig, words: list[str]) -> list[Example]:
    """n examples drawn from the weighted task mix, reproducible from the seed."""
    rng = random.Random(seed)
    gens = generators(ident, words)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    return [gens[rng.choices(names, weights)[0]](rng, split) for _ in range(n)]


def word_list(texts: list[str], limit: int = 4000) -> list[str]:
    """Lower-case alphabetic words of 3-10 letters from a corpus, most frequent first."""
    counts: dict[str, int] = {}
    for t in texts:
        for w in re.findall(r"\b[a-z]{3,10}\b", t):
            counts[w] = counts.get(w, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:limit]


_INT = re.compile(r"-?\d+")


def extra_checks(ex: Example, reply: str) -> dict[str, bool]:
    """Stricter secondary figures reported beside a task's accuracy."""
    if ex.task == "counting":
        # A right count about a misspelt word can be luck (most counts are 0-2): this one
        # also requires the word to be quoted back exactly.
        return {"counting_word_exact": check(ex, reply) and f'"{ex.meta["word"]}"' in reply}
    return {}


def check(ex: Example, reply: str) -> bool:
    """Is the model's final reply a correct answer to the example?"""
    if ex.task in ("arithmetic", "counting", "word_problems"):
        nums = _INT.findall(reply.replace(",", ""))
        return bool(nums) and nums[-1] == ex.answer
    if ex.task.startswith("identity"):
        ok = ex.answer.lower() in reply.lower()
        if ex.meta.get("lang") == "zh":
            ok = ok and re.search(r"[\u4e00-\u9fff]", reply) is not None  # answered in Chinese
        return ok
    if ex.task in ("spelling", "instructions"):
        return reply.strip().rstrip(".。") == ex.answer
    return ex.answer.lower() in reply.lower()
