"""A tiny document model rendered twice: to Markdown and to self-contained HTML.

Building the content once and rendering it twice keeps the two outputs from drifting apart."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    kind: str = ""  # "" | "warn" | "alarm" (a result may be invalid) | "banner" | "source" | "note"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    source: str = ""  # where the numbers came from (file + config)


@dataclass
class Figure:
    path: Path  # PNG on disk (report/figures/...)
    caption: str
    source: str = ""


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document, figures_dir: Path, link_prefix: str = "figures") -> str:
    """Markdown; a figure at figures_dir/x.png is linked as link_prefix/x.png (relative to report.md)."""
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            if block.kind == "banner":
                out += [f"> **{block.text}**", ""]
            elif block.kind == "warn":
                out += [f"> ⚠ {block.text}", ""]
            elif block.kind == "alarm":
                out += [f"> **⚠ WARNING: {block.text}**", ""]
            elif block.kind == "source":
                out += [f"*Source: {block.text}*", ""]
            else:
                out += [block.text, ""]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"**{block.caption}**", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append("|" + "|".join("---" for _ in block.header) + "|")
            for row in block.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("")
            if block.source:
                out += [f"*Source: {block.source}*", ""]
        elif isinstance(block, Figure):
            rel = f"{link_prefix}/{block.path.relative_to(figures_dir).as_posix()}"
            out += [f"![{block.caption}]({rel})", "", f"*{block.caption}*", ""]
            if block.source:
                out += [f"*Source: {block.source}*", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1300px;margin:24px auto;
padding:0 20px;color:#1b1f24;line-height:1.45}
h1{border-bottom:2px solid #333;padding-bottom:6px}h2{margin-top:34px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #bbb;padding:4px 9px;text-align:left;vertical-align:top}th{background:#eef1f5}
td.num{text-align:right;white-space:nowrap}td.num .ci{font-size:12px;color:#444}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
.source{color:#555;font-size:12.5px;font-style:italic}
.warn{background:#fff4e0;border-left:5px solid #e08a00;padding:6px 10px}
.alarm{background:#fde7e9;border:3px solid #c62828;color:#8e0000;font-weight:700;padding:10px 12px}
.banner{background:#c62828;color:#fff;font-size:28px;font-weight:800;text-align:center;padding:14px;
letter-spacing:2px}
.fail{color:#b00020;font-weight:700}.pass{color:#1b7f3b;font-weight:700}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:13px;color:#333}
"""


# A number, optionally marked as an upper bound (≤) or signed (+), then anything (an interval, a mark).
_NUMERIC = re.compile(r"^(—|[≤<+]?-?[0-9][0-9.e+-]*)( .*)?$")
_CI_TAIL = re.compile(r" (\[[^\]]*\])")  # the first " [lo, hi]" after a number


def _html_cell(text: str) -> str:
    esc = html.escape(str(text))
    classes = []
    if "FAIL" in esc or "LEAKAGE" in esc:
        classes.append("fail")
    elif esc == "PASS":
        classes.append("pass")
    if _NUMERIC.match(str(text)) and len(str(text)) < 40:
        classes.append("num")  # numbers right-aligned so digits line up; text stays left-aligned
    cls = f' class="{" ".join(classes)}"' if classes else ""
    if "num" in classes:
        # Numbers stay unbroken, but a cell is allowed two lines: Table 1 and the per-class tables have a
        # dozen such columns, and kept on one line each they ran off a 1,400 px screen (issue 34). A pair
        # ("sens / spec") breaks after its slash; a lone number puts its interval under it, smaller.
        if " / " in esc:
            esc = esc.replace(" / ", " /<br>", 1)
        else:
            esc = _CI_TAIL.sub(r'<br><span class="ci">\1</span>', esc, count=1)
    return f"<td{cls}>{esc}</td>"


def render_html(doc: Document) -> str:
    """One file, no external references: CSS inline, figures as base64 data URIs."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            cls = f' class="{block.kind}"' if block.kind else ""
            text = html.escape(block.text)
            if block.kind == "warn":
                text = "⚠ " + text
            if block.kind == "alarm":
                text = "⚠ WARNING: " + text
            if block.kind == "source":
                text = "Source: " + text
            out.append(f"<p{cls}>{text}</p>")
        elif isinstance(block, Table):
            out.append("<table>")
            if block.caption:
                out.append(f"<caption>{html.escape(block.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header) + "</tr>")
            for row in block.rows:
                out.append("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>")
            out.append("</table>")
            if block.source:
                out.append(f'<p class="source">Source: {html.escape(block.source)}</p>')
        elif isinstance(block, Figure):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
            if block.source:
                out.append(f'<p class="source">Source: {html.escape(block.source)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
