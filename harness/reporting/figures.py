"""What every report figure shares: a headless figure, PNG bytes, colours by role that read the
same in every panel, and NoData, which a figure function raises when a run lacks what it draws.
The case labels are analysis/labels.py's, shared with the tables.

Figures are made with matplotlib's object API (Figure + the Agg canvas), never pyplot: no display,
no global state, nothing to close. This module imports matplotlib, so only the report imports it.
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

# DejaVu Sans ships with matplotlib and has every glyph used here (the seed notebook's labels came
# out as empty boxes because its CJK font was missing). Sizes are for figures ~5 inches per panel.
STYLE = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
         "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True,
         "grid.alpha": 0.3, "figure.dpi": 110}

# colours by role, handed out in role order and by name within a role (impl_colors): candidates
# blues and greens, the reference orange, peers the rest, the unquantized baseline grey
ROLE_ORDER = ("candidate", "reference", "peer", "baseline")
ROLE_COLORS = {"candidate": ("tab:blue", "tab:green", "tab:cyan", "navy", "darkgreen"),
               "reference": ("tab:orange", "goldenrod"),
               "peer": ("tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive"),
               "baseline": ("0.35", "0.6")}
UNKNOWN_ROLE_COLORS = ("black", "0.2")
BITS_COLORS = {8: "tab:orange", 4: "tab:red", 2: "tab:purple"}


class NoData(Exception):
    """A panel that this run cannot draw; the message says what is missing (it goes in the report)."""


def format_rows(d: pd.DataFrame) -> pd.DataFrame:
    """The rows that can carry a case's own format, the reference's first (then candidates', then
    peers'), so that the first row of a format is the reference's wherever it ran: an
    implementation with its own format (a library's NF4) has other bytes and errors, and the
    dense baseline, left out, has none."""
    rank = {"reference": 0, "candidate": 1, "peer": 2}
    d = d[d["role"] != "baseline"]
    return d.iloc[sorted(range(len(d)), key=lambda i: rank.get(d["role"].iloc[i], 3))]


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # no Software/date metadata: the same data gives the same bytes
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _role_ranks(d: pd.DataFrame) -> dict[str, int]:
    """Each implementation of d's rows and the rank of its role in ROLE_ORDER (of its first role,
    should one name have several across ops; len(ROLE_ORDER) for a role that is none of them)."""
    ranks: dict[str, int] = {}
    for impl, role in d[["impl", "role"]].drop_duplicates().itertuples(index=False):
        rank = ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)
        ranks[impl] = min(ranks.get(impl, rank), rank)
    return ranks


def impls_by_role(d: pd.DataFrame) -> list[str]:
    """The implementations of d's rows: candidates first, then the reference, peers and the
    baseline (rows of no known role last), by name within a role."""
    ranks = _role_ranks(d)
    return sorted(ranks, key=lambda impl: (ranks[impl], str(impl)))


def impl_colors(d: pd.DataFrame) -> dict[str, str]:
    """A colour per implementation of d's rows, from its role's palette (ROLE_COLORS) in the order
    of impls_by_role, so the same run always gets the same colours. Give it the whole run, not one
    op's rows, for an implementation to keep its colour in every panel."""
    ranks = _role_ranks(d)
    palettes = [*(ROLE_COLORS[role] for role in ROLE_ORDER), UNKNOWN_ROLE_COLORS]
    used = [0] * len(palettes)
    colors = {}
    for impl in impls_by_role(d):
        palette = palettes[ranks[impl]]
        colors[impl] = palette[used[ranks[impl]] % len(palette)]
        used[ranks[impl]] += 1
    return colors


def plain_log(ax, axis: str = "y") -> None:
    """Log scale with ticks at 1, 2, 5 x 10^n printed as plain numbers (0.05, not 5x10^-2)."""
    getattr(ax, f"set_{axis}scale")("log")
    which = getattr(ax, f"{axis}axis")
    which.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(NullFormatter())
