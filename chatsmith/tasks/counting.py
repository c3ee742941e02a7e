"""Letter counting through the `count_letters` tool: how many times a letter is in a word.

The check compares the last number of the final reply with the count; a stricter
secondary figure also wants the word quoted back exactly.
"""

from __future__ import annotations

import random

from chatsmith.tasks.common import Example, last_number_is, split_of, tool_turns

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
    msgs = tool_turns(q, "count_letters", {"word": w, "letter": letter}, str(n), final)
    return Example("counting", msgs, msgs[:1], str(n), {"word": w, "letter": letter})


def check(ex: Example, reply: str) -> bool:
    """The last number of the final reply is the count."""
    return last_number_is(ex, reply)


def reward(ex: Example, reply: str) -> float:
    """RL's reward for one answer: 1 for a correct final answer, 0 otherwise."""
    return float(check(ex, reply))


def extra_checks(ex: Example, reply: str) -> dict[str, bool]:
    """Stricter secondary figures reported beside the task's accuracy."""
    # A right count about a misspelt word can be luck (most counts are 0-2): this one
    # also requires the word to be quoted back exactly.
    return {"counting_word_exact": check(ex, reply) and f'"{ex.meta["word"]}"' in reply}
