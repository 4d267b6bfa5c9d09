"""A report as a list of blocks (headings, text, images, tables, skipped panels), rendered twice:
as Markdown that links the PNG files beside it, and as one self-contained HTML file with the same
PNGs embedded as base64 (no external src or href: it can be mailed or attached to a pull request).
Numbers in tables are printed as `quantbench show` prints them (summary.fmt, 4 significant digits).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

import pandas as pd
from pandas.api.types import is_number

from ..analysis.tables import fmt, to_markdown


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str  # one paragraph; `code` spans are kept in both renderings


@dataclass(frozen=True)
class Image:
    file: str  # the PNG's file name in the report folder
    caption: str
    png: bytes = field(repr=False)


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Skipped:
    panel: str
    why: str


Block = Heading | Text | Image | Table | Skipped


def to_markdown_doc(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.file})\n\n{b.caption}")
        elif isinstance(b, Table):
            out.append((f"{b.caption}\n\n" if b.caption else "") + to_markdown(_clean(b.frame)))
        elif isinstance(b, Skipped):
            out.append(f"*{b.panel}: not drawn, {b.why}.*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em;
       color: #222; line-height: 1.4; }
img { max-width: 100%; height: auto; display: block; }
figure { margin: 1.2em 0; } figcaption { color: #555; font-size: 0.9em; }
.table { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.82em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.text { text-align: left; }
.skipped { color: #8a5a00; font-style: italic; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values of any kind (NaN, pd.NA, None) as None, which fmt prints as '-'."""
    return frame.astype(object).where(frame.notna(), None)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in _clean(frame).itertuples(index=False):
        cells = "".join(f"<td>{html.escape(fmt(v))}</td>" if is_number(v) else
                        f'<td class="text">{html.escape(fmt(v))}</td>' for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def to_html_doc(blocks: list[Block], title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            out.append((f"<p>{_inline(b.caption)}</p>" if b.caption else "") + _html_table(b.frame))
        elif isinstance(b, Skipped):
            out.append(f'<p class="skipped">{html.escape(b.panel)}: not drawn, {_inline(b.why)}.</p>')
    out.append("</body></html>")
    return "\n".join(out)
