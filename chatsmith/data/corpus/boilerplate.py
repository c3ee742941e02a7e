"""Boilerplate removal for web text: copyright, re-post and "follow us" notices, and pinyin glosses.

English notices are removed as whole short lines (a long line that mentions copyright is prose).
Chinese notices are usually glued to the end of a paragraph (「……結束。未經授權,嚴禁轉載。」),
so they are removed as phrases, with the punctuation after them; a line left with nothing but
punctuation goes too. Each Chinese pattern accepts traditional and simplified characters and
half- and full-width punctuation.

The pinyin artifact comes from pages converted with ruby annotations flattened into text:
「發(fā)展」 for 「發展」. We remove a parenthesis only when it follows a CJK character and holds
exactly one lowercase pinyin syllable with one tone mark, so 「人工智能(AI)」, 「(2023)」 and
`f(x)` never match.
"""

from __future__ import annotations

import re

# ---- English: whole lines -------------------------------------------------------------------
MAX_EN_LINE = 200  # a longer line is prose that happens to mention these words

_EN_PATTERNS = [
    r"\ball rights reserved\b",
    r"^\W*(?:copyright\s*)?(?:©|\(c\)|copyright)\s*(?:©\s*|\(c\)\s*)?(?:\d{4}|by\b)",
    r"\b(?:reprinted|reposted|republished|reproduced|used)\b.{0,40}\bwith (?:the )?(?:kind )?permission\b",
    r"\b(?:may|must|shall) not be (?:reproduced|reposted|republished|redistributed|copied)\b",
    r"\b(?:do not|don't|please do not) (?:reproduce|repost|republish|redistribute|copy)\b",
    r"^\W*(?:this (?:article|post|story|piece) (?:was|is|first) )?(?:originally|first) "
    r"(?:published|posted|appeared)\b",
    r"\bfollow us (?:on|at|for)\b",
    r"\blike us on (?:facebook|instagram)\b",
    r"\b(?:subscribe|sign up) (?:to|for) (?:our|the) (?:newsletter|channel|mailing list)\b",
    r"^\W*share (?:this|on) (?:article|post|story|page|facebook|twitter|x|linkedin)\b",
    r"\bthis (?:web)?site uses cookies\b",
    r"^\W*(?:click|tap) here to (?:subscribe|follow|share|read more)\b",
]
_EN = re.compile("|".join(f"(?:{p})" for p in _EN_PATTERNS), re.IGNORECASE)
# Substrings (of the lowercased text) without which no pattern above can match: a fast prefilter.
_EN_KEYS = (
    "rights reserved",
    "©",
    "(c)",
    "copyright",
    "permission",
    "reproduc",
    "repost",
    "republish",
    "redistribut",
    "originally",
    "first ",
    "follow us",
    "like us",
    "subscribe",
    "sign up",
    "share ",
    "cookies",
    "click here",
    "tap here",
    "don't",
    "do not",
    "not be",
)

# ---- Chinese: phrases, traditional [繁简] and simplified, , and ， ----------------------------
_C = r"[,，、]?\s*"  # an optional comma of either width
_END = r"[\s,，、。．.!！;；:：~～]*"  # punctuation that belongs to the removed notice
_ZH_PATTERNS = [
    # 未經授權,嚴禁轉載 / 未经授权，不得转载或摘编
    rf"未[經经](?:[過过])?(?:作者|本[站網网]|本[號号])?(?:許可|许可|授[權权]|同意|允許|允许){_C}"
    r"(?:[嚴严]禁|不得|禁止|[請请]勿|[謝谢][絕绝])(?:任何(?:形式的)?)?(?:[轉转][載载]|[轉转][發发]|[複复]製|复制|使用)"
    r"(?:[或和及、](?:摘[編编]|[複复]製|复制|使用|[轉转][發发]))*",
    # 公眾號轉載請先在後台留言 / 如需转载请联系我们
    rf"(?:公[眾众][號号])?(?:如需)?[轉转][載载]{_C}[請请]先?(?:在[後后]台留言|[聯联][繫系](?:我[們们]|作者|小[編编])"
    r"(?:[獲获]得授[權权])?|[註注]明(?:出[處处]|[來来]源|原文[鏈链]接|作者)|保留(?:[來来]源|出[處处]|原文[鏈链]接))",
    # 更多內容,點擊下方關注 / 更多精彩内容，请点击上方关注我们
    rf"更多(?:精彩)?(?:[內内]容|[資资][訊讯]|好文|干[貨货]|乾[貨货]){_C}(?:[請请]|敬[請请])?(?:[點点][擊击]|[長长]按|[掃扫][碼码])"
    r"(?:下方|上方|[頂顶]部|[底]部)?(?:[藍蓝]字)?(?:[關关]注|[訂订][閱阅]|二[維维][碼码])(?:我[們们]|本?公[眾众][號号])?",
    # 點擊上方藍字關注我們 / 长按识别二维码关注
    r"(?:[點点][擊击]|[長长]按(?:[識识][別别])?|[掃扫]描|[掃扫][碼码])(?:下方|上方|[頂顶]部|[底]部|下[圖图])?(?:[藍蓝]字)?"
    r"(?:二[維维][碼码])?(?:[關关]注|[訂订][閱阅]|[識识][別别]二[維维][碼码])(?:我[們们]|本?公[眾众][號号])?",
    # 版權所有,翻印必究 / 版权所有，侵权必究
    rf"[版][權权]所有{_C}(?:(?:翻印|侵[權权]|盜版|盗版)必究)?",
    # 歡迎關注我們的公眾號 / 欢迎订阅本号
    r"[歡欢]迎(?:[關关]注|[訂订][閱阅]|[轉转][發发]|分享)(?:我[們们]的|本)?(?:公[眾众][號号]|微信[號号]?|微博|[號号])",
    # 喜歡就點個讚 / 觉得不错就点个在看
    rf"(?:喜[歡欢]|[覺觉]得不[錯错]|[覺觉]得有用)(?:的[話话])?(?:本文)?{_C}(?:[請请]|就|[記记]得)?"
    r"(?:[點点][個个]?[讚赞]|[點点][個个]?在看|[轉转][發发]|分享)(?:[給给]更多[人朋]友?)?",
    # 本文來源：某某網 (an attribution line)
    r"本文(?:(?:[來来]源|出[處处])[:：]|[轉转](?:[載载])?自[:：]?)[^\n。]*",
    # 免責聲明：……
    r"免[責责][聲声]明[:：][^\n]*",
]
_ZH = re.compile("(?:" + "|".join(f"(?:{p})" for p in _ZH_PATTERNS) + ")" + _END)
_ZH_HINT = re.compile(r"[授權权載载轉转關关注版責责讚赞看源處处]")
_ONLY_PUNCT = re.compile(r"^[\W_]*$")

# ---- pinyin glosses -------------------------------------------------------------------------
_TONED = "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜńňǹḿ"
_CJK_CHAR = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# One syllable: at most 6 lowercase letters in all, exactly one of them tone-marked.
_PINYIN = re.compile(
    rf"(?<=[{_CJK_CHAR}])[(（](?=[a-zü{_TONED}]{{1,6}}[)）])"
    rf"[a-zü]{{0,5}}[{_TONED}][a-zü]{{0,5}}[)）]"
)


def strip_boilerplate(text: str) -> tuple[str, int, int]:
    """(text without notices, English lines removed, Chinese phrases removed)."""
    drop = _english_lines(text)
    zh_hit = _ZH_HINT.search(text) is not None
    if not (drop or zh_hit):  # the common case costs two scans
        return text, 0, 0
    out: list[str] = []
    lines_removed = phrases_removed = 0
    for i, line in enumerate(text.split("\n")):
        if i in drop:
            lines_removed += 1
            continue
        if zh_hit:
            new, n = _ZH.subn("", line)
            if n:
                phrases_removed += n
                if _ONLY_PUNCT.match(new):
                    continue
                line = new.rstrip()
        out.append(line)
    if not (lines_removed or phrases_removed):
        return text, 0, 0
    return "\n".join(out), lines_removed, phrases_removed


def _english_lines(text: str) -> set[int]:
    """Indices of the short lines holding an English notice."""
    low = text.lower()
    if not any(k in low for k in _EN_KEYS):
        return set()
    return {
        i
        for i, line in enumerate(low.split("\n"))
        if len(line) <= MAX_EN_LINE and any(k in line for k in _EN_KEYS) and _EN.search(line)
    }


def strip_pinyin(text: str) -> tuple[str, int]:
    """Remove 「發(fā)展」-style pinyin glosses; returns (text, glosses removed)."""
    if "(" not in text and "（" not in text:
        return text, 0
    return _PINYIN.subn("", text)
