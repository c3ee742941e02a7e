"""Identity: "Who are you?" in English and Chinese, answered with the configured name and maker.

The check asks for the assistant's name in the reply, and for a reply in Chinese to a
Chinese question.
"""

from __future__ import annotations

import random
import re

from chatsmith.common.config import IdentityConfig
from chatsmith.tasks.common import Example, split_of

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


def check(ex: Example, reply: str) -> bool:
    """The name is in the reply (and, for a Chinese question, the reply is in Chinese)."""
    ok = ex.answer.lower() in reply.lower()
    if ex.meta.get("lang") == "zh":
        ok = ok and re.search(r"[\u4e00-\u9fff]", reply) is not None  # answered in Chinese
    return ok


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))
