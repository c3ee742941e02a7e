"""Document quality heuristics in the manner of the Gopher rules (Rae et al. 2021, appendix A1).

Length, mean word length, symbol-to-word ratio, bullet and ellipsis lines, alphabetic words,
stop words, and repetition (duplicate lines and paragraphs, top n-grams, duplicate n-grams).
`quality_issue` returns the name of the first rule a document fails, or None.

The word rules need word boundaries, which Chinese and Japanese text does not mark with spaces:
a document whose letters are mostly CJK counts each CJK character as a word for the length and
symbol rules, and skips the word-length, stop-word, alphabetic-word and n-gram rules (the line
and paragraph repetition rules still apply). The English stop-word rule applies to Latin text only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002ffff"
_CJK_RUN = re.compile(f"[{CJK}]+")
_LATIN_RUN = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
# a whitespace-separated word without a letter
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
_BULLET = ("•", "●", "○", "▪", "‣", "-", "*", "–", "·")
_STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
_PUNCT_EDGES = "\"'.,;:!?()[]{}<>«»“”‘’"


@dataclass
class QualityConfig:
    min_words: int = 50  # Gopher: 50 .. 100,000 words
    max_words: int = 100_000
    min_mean_word_len: float = 3.0  # Gopher: 3 .. 10 characters
    max_mean_word_len: float = 10.0
    max_symbol_ratio: float = 0.1  # '#' and '...' per word
    max_bullet_lines: float = 0.9  # share of lines that start with a bullet
    max_ellipsis_lines: float = 0.3  # share of lines that end with an ellipsis
    min_alpha_words: float = 0.8  # share of words with at least one letter
    min_stop_words: int = 2  # of the, be, to, of, and, that, have, with (Latin text)
    max_dup_lines: float = 0.3  # share of lines that repeat an earlier line
    max_dup_paragraphs: float = 0.3
    max_dup_line_chars: float = 0.2  # share of characters in repeated lines
    max_dup_paragraph_chars: float = 0.2
    # most frequent 2-, 3-, 4-gram: share of word characters it covers
    max_top_ngram_chars: tuple[float, ...] = (0.20, 0.18, 0.16)
    # 5- ... 10-grams that occur more than once: share of word characters they cover
    max_dup_ngram_chars: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)


def script_counts(text: str) -> tuple[int, int, int]:
    """(CJK, Latin, other) letters: a simple script-based language signal."""
    # Runs, not single characters: far fewer matches for the regex engine to hand back.
    cjk = sum(map(len, _CJK_RUN.findall(text)))
    latin = sum(map(len, _LATIN_RUN.findall(text)))
    letters = sum(map(len, _LETTER_RUN.findall(text)))
    return cjk, latin, max(0, letters - cjk - latin)


def script_of(text: str) -> str:
    """'cjk', 'latin' or 'other' by majority of letters ('other' for a text without letters)."""
    cjk, latin, other = script_counts(text)
    if cjk == latin == other == 0:
        return "other"
    return max((cjk, "cjk"), (latin, "latin"), (other, "other"))[1]


def _dup_share(parts: list[str]) -> tuple[float, float]:
    """(share of parts that repeat an earlier one, share of characters in them)."""
    parts = [p for p in parts if p.strip()]
    if not parts:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for p in parts:
        total_chars += len(p)
        if p in seen:
            dup += 1
            dup_chars += len(p)
        else:
            seen.add(p)
    return dup / len(parts), dup_chars / max(1, total_chars)


_P = np.uint64(0x100000001B3)  # an odd multiplier for the n-gram hash (wrapping uint64 arithmetic)


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A hash of every word n-gram (positions 0 .. len-n), from per-word hashes."""
    m = ids.size - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _P + ids[k : k + m]
    return h


def _top_ngram_share(ids: np.ndarray, lens: np.ndarray, n: int, total_chars: int) -> float:
    """Characters of the most frequent n-gram times its count, over all word characters.

    Ties go to the longest of the most frequent n-grams, so the result never depends on hash order.
    """
    if ids.size < n:
        return 0.0
    _, first, counts = np.unique(_ngram_hashes(ids, n), return_index=True, return_counts=True)
    top = counts.max()
    if top < 2:
        return 0.0
    starts = first[counts == top]
    chars = np.add.reduce([lens[starts + k] for k in range(n)])
    return float(top * chars.max()) / total_chars


def _dup_ngram_share(ids: np.ndarray, lens: np.ndarray, n: int, total_chars: int) -> float:
    """Characters of words inside n-grams seen earlier in the text (each word counted once)."""
    if ids.size < n:
        return 0.0
    h = _ngram_hashes(ids, n)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[inverse.ravel()] != np.arange(h.size))
    if dup.size == 0:
        return 0.0
    cover = np.zeros(ids.size + 1, dtype=np.int32)  # +1 where a repeat starts, -1 where it ends
    np.add.at(cover, dup, 1)
    np.add.at(cover, dup + n, -1)
    return float(lens[np.cumsum(cover[:-1]) > 0].sum()) / total_chars


def quality_issue(text: str, cfg: QualityConfig) -> str | None:
    """The first rule the document fails ('too_short', 'dup_lines', ...), or None if it passes."""
    words = text.split()
    cjk, latin, other = script_counts(text)
    is_cjk = cjk > latin + other
    n_units = len(words) + (cjk if is_cjk else 0)
    if n_units < cfg.min_words:
        return "too_short"
    if n_units > cfg.max_words:
        return "too_long"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n_units > cfg.max_symbol_ratio:
        return "symbol_ratio"
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if lines:
        if sum(ln.lstrip().startswith(_BULLET) for ln in lines) / len(lines) > cfg.max_bullet_lines:
            return "bullet_lines"
        if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > cfg.max_ellipsis_lines:
            return "ellipsis_lines"
    line_share, line_chars = _dup_share(text.split("\n"))
    if line_share > cfg.max_dup_lines:
        return "dup_lines"
    if line_chars > cfg.max_dup_line_chars:
        return "dup_line_chars"
    para_share, para_chars = _dup_share(re.split(r"\n\s*\n", text))
    if para_share > cfg.max_dup_paragraphs:
        return "dup_paragraphs"
    if para_chars > cfg.max_dup_paragraph_chars:
        return "dup_paragraph_chars"
    if is_cjk:
        return None
    mean_len = sum(len(w) for w in words) / len(words)
    if not cfg.min_mean_word_len <= mean_len <= cfg.max_mean_word_len:
        return "mean_word_length"
    if 1 - len(_NO_LETTER_WORD.findall(text)) / len(words) < cfg.min_alpha_words:
        return "alpha_words"
    norm = [w.strip(_PUNCT_EDGES).lower() for w in words]
    if latin >= other and len(_STOP_WORDS.intersection(norm)) < cfg.min_stop_words:
        return "stop_words"
    lens = np.fromiter((len(w) for w in norm), dtype=np.int64, count=len(norm))
    total_chars = int(lens.sum()) or 1
    ids = np.fromiter((hash(w) for w in norm), dtype=np.int64, count=len(norm)).view(np.uint64)
    for n, limit in zip((2, 3, 4), cfg.max_top_ngram_chars):
        if _top_ngram_share(ids, lens, n, total_chars) > limit:
            return f"top_{n}gram"
    for n, limit in zip(range(5, 11), cfg.max_dup_ngram_chars):
        if _dup_ngram_share(ids, lens, n, total_chars) > limit:
            return f"dup_{n}gram"
    return None
