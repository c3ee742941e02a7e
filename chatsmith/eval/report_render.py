"""Rendering the report card's sections as Markdown and as one self-contained HTML page.

A section is a tuple: ("h1"|"h2"|"h3"|"p", text), ("table", header, rows),
("img", file name, alt text) or ("list", items). The HTML page embeds the PNGs as
base64 data URIs and carries its own CSS, so it can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from chatsmith.eval.report_change import RED

Section = tuple[Any, ...]

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d1d1f;background:#fff}
h1{font-size:1.7em;border-bottom:2px solid #e5e5ea;padding-bottom:.3em}
h2{margin-top:1.8em;border-bottom:1px solid #e5e5ea;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}
th,td{border:1px solid #d2d2d7;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f5f5f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #e5e5ea;border-radius:6px;margin:.5em 0}
code{background:#f5f5f7;padding:1px 4px;border-radius:4px}
li{margin:.2em 0}
td.bad{color:#c00;font-weight:600}
.note{color:#555;font-size:13px}
@media (prefers-color-scheme:dark){body{background:#111;color:#eee}th{background:#222}
tr:nth-child(even) td{background:#181818}th,td{border-color:#333}code{background:#222}}
"""


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(sections: list[Section]) -> str:
    out: list[str] = []
    for s in sections:
        kind = s[0]
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + s[1], ""]
        elif kind == "p":
            out += [s[1], ""]
        elif kind == "table":
            header, rows = s[1], s[2]
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{s[2]}]({s[1]})", ""]
        elif kind == "list":
            out += [f"- {item}" for item in s[1]] + [""]
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _td(c: Any) -> str:
    text = str(c)
    if text.startswith(RED):  # a regression (report_change.fmt_change)
        return f'<td class="num bad">{html.escape(text)}</td>'
    num = bool(re.fullmatch(r"[-–+]?[\d.,]+( %| s)?|–", text))
    return f'<td class="num">{html.escape(text)}</td>' if num else f"<td>{html.escape(text)}</td>"


def to_html(sections: list[Section], title: str, image_dir: Path) -> str:
    esc = html.escape
    body: list[str] = []
    for s in sections:
        kind = s[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{esc(s[1])}</{kind}>")
        elif kind == "p":
            body.append(f'<p class="note">{esc(s[1])}</p>')
        elif kind == "table":
            head = "".join(f"<th>{esc(str(h))}</th>" for h in s[1])
            rows = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in s[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            p = image_dir / s[1]
            if p.is_file():
                body.append(f'<img src="{_data_uri(p)}" alt="{esc(s[2])}">')
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(str(i))}</li>" for i in s[1]) + "</ul>")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
