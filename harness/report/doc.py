"""The report as data (sections of text, tables and images) and its two renderings.

Markdown references images by their relative path; HTML embeds each PNG as a ``data:`` URI, so
``report.html`` is one self-contained file that opens from ``file://`` with no network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Text:
    text: str
    kind: str = "p"  # p | note | code


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the report's folder
    alt: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self):
        if not self.anchor:
            self.anchor = "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, intro: list, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for b in intro:
        out += _md_block(b)
    out.append("Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in sections))
    out.append("")
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            out += _md_block(b)
    return "\n".join(out).rstrip() + "\n"


def _md_block(b) -> list[str]:
    if isinstance(b, Text):
        if b.kind == "code":
            return ["```", b.text, "```", ""]
        return [f"> {b.text}" if b.kind == "note" else b.text, ""]
    if isinstance(b, Bullets):
        return [f"- {i}" for i in b.items] + [""]
    if isinstance(b, Table):
        lines = [
            "| " + " | ".join(_md_cell(h) for h in b.header) + " |",
            "|" + "|".join("---" for _ in b.header) + "|",
        ]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        return lines + [""]
    if isinstance(b, Image):
        return [f"![{b.alt}]({b.path})", ""]
    raise TypeError(f"unknown block {type(b).__name__}")


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #3b75af}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.88em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f4f8}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
blockquote{border-left:4px solid #ef8636;margin:0.5em 0;padding:0.2em 1em;background:#fff8f0}
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}
.PASS,.ok,.agrees,.fits,.match{color:#1a7f37;font-weight:600}
.FAIL,.mismatch,.differs,.regression{color:#c0392b;font-weight:600}
.INCOMPLETE,.UNMEASURED,.INCONCLUSIVE,.inconclusive{color:#b36b00;font-weight:600}
nav a{margin-right:0.8em}
"""

_VERDICT_WORDS = (
    "PASS",
    "FAIL",
    "INCOMPLETE",
    "UNMEASURED",
    "INCONCLUSIVE",
    "inconclusive",
    "ok",
    "agrees",
    "fits",
    "match",
    "mismatch",
    "differs",
    "regression",
)


def _html_cell(c: str, tag: str = "td") -> str:
    text = str(c)
    word = text.split(" ", 1)[0].rstrip(":,")
    cls = f' class="{word}"' if word in _VERDICT_WORDS else ""
    return f"<{tag}{cls}>{html.escape(text)}</{tag}>"


def _data_uri(base_dir: Path, rel: str) -> str:
    data = (base_dir / rel).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _html_block(b, base_dir: Path) -> str:
    if isinstance(b, Text):
        if b.kind == "code":
            return f"<pre>{html.escape(b.text)}</pre>"
        inner = html.escape(b.text)
        return f"<blockquote>{inner}</blockquote>" if b.kind == "note" else f"<p>{inner}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(_html_cell(h, "th") for h in b.header)
        body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Image):
        return (
            f'<figure><img src="{_data_uri(base_dir, b.path)}" alt="{html.escape(b.alt)}" '
            f'data-file="{html.escape(b.path)}"><figcaption>{html.escape(b.alt)}</figcaption></figure>'
        )
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(title: str, intro: list, sections: list[Section], base_dir: Path) -> str:
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [_html_block(b, base_dir) for b in intro]
    parts.append(f"<nav>{nav}</nav>")
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        parts += [_html_block(b, base_dir) for b in s.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
