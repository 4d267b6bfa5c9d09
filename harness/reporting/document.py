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


def gather_notices(blocks: list[Block]) -> list[Block]:
    """The blocks with every `not drawn` notice that sits in a section (the blocks between two
    headings) beside a drawn panel moved to one closing section, where it is still named with its
    reason; a section with nothing drawn keeps its notices where they are."""
    sections: list[list[Block]] = [[]]
    for b in blocks:
        if isinstance(b, Heading):
            sections.append([])
        sections[-1].append(b)
    kept, moved = [], []
    for section in sections:
        drawn = any(isinstance(b, Image) for b in section)
        for b in section:
            (moved if drawn and isinstance(b, Skipped) else kept).append(b)
    if moved:
        kept += [Heading("Panels not drawn", 2), *moved]
    return kept


def slug(text: str, taken: set[str]) -> str:
    """A heading's anchor as GitHub makes it (lower case, words joined by '-'), made unique."""
    base = re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-") or "section"
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name)
    return name


def contents(blocks: list[Block]) -> list[tuple[int, str, str]]:
    """(level, text, anchor) of every heading of level 2 and 3, in order: the table of contents."""
    taken: set[str] = set()
    anchors = [(b.level, b.text, slug(b.text, taken)) for b in blocks if isinstance(b, Heading)]
    return [a for a in anchors if a[0] in (2, 3)]


def to_markdown_doc(blocks: list[Block]) -> str:
    out = []
    toc = contents(blocks)
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
            if b.level == 1 and toc:
                out.append("\n".join(f"{'  ' * (level - 2)}- [{text}](#{anchor})" for level, text, anchor in toc))
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
.table { overflow: auto; max-height: 85vh; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.82em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; position: sticky; top: 0; } td.text { text-align: left; }
nav ul { margin: 0.3em 0; } nav li { margin: 0.1em 0; }
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
    toc = contents(blocks)
    anchors = iter(anchor for *_, anchor in toc)  # the headings of level 2 and 3, in order
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{next(anchors)}"' if b.level in (2, 3) else ""
            out.append(f"<h{b.level}{anchor}>{html.escape(b.text)}</h{b.level}>")
            if b.level == 1 and toc:
                out.append("<nav><ul>" + "".join(
                    f'<li style="margin-left:{(level - 2) * 1.5}em"><a href="#{anchor}">{html.escape(text)}</a></li>'
                    for level, text, anchor in toc) + "</ul></nav>")
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
