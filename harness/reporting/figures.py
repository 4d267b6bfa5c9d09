"""What every report figure shares: a headless figure, PNG bytes, labels and colours that read the
same in every panel, and NoData, which a figure function raises when a run lacks what it draws.

Figures are made with matplotlib's object API (Figure + the Agg canvas), never pyplot: no display,
no global state, nothing to close. This module imports matplotlib, so only the report imports it.
"""

from __future__ import annotations

import io
import math

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

# DejaVu Sans ships with matplotlib and has every glyph used here (the seed notebook's labels came
# out as empty boxes because its CJK font was missing). Sizes are for figures ~5 inches per panel.
STYLE = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
         "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True,
         "grid.alpha": 0.3, "figure.dpi": 110}

# one colour per implementation, the same in every panel
IMPL_COLORS = {"triton": "tab:blue", "torch": "tab:orange", "torch_compile": "tab:purple", "fp16": "0.35",
               "tinygemm": "tab:green", "int_mm": "tab:red"}
BITS_COLORS = {8: "tab:orange", 4: "tab:red", 2: "tab:purple"}
SCHEME_SHORT = {"asymmetric": "asym", "symmetric": "sym"}


class NoData(Exception):
    """A panel that this run cannot draw; the message says what is missing (it goes in the report)."""


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # no Software/date metadata: the same data gives the same bytes
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def impl_color(impl: str) -> str:
    return IMPL_COLORS.get(impl, "black")


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def format_label(bits, scheme, granularity, group_size) -> str:
    """'int4 asym g128', 'int8 sym channel': the quantization format of a row, compactly."""
    if not _given(bits):
        return "-"
    gran = f"g{int(group_size)}" if granularity == "group" and _given(group_size) else str(granularity)
    return f"int{int(bits)} {SCHEME_SHORT.get(scheme, scheme)} {gran}"


def shape_label(n, k, shape_name=None) -> str:
    label = f"{int(n)}x{int(k)}"
    return f"{shape_name} {label}" if _given(shape_name) else label


def format_order(granularity: str, group_size) -> tuple[int, int]:
    """Coarse to fine: tensor, channel, then groups by decreasing size."""
    rank = {"tensor": 0, "channel": 1, "group": 2}.get(granularity, 3)
    return rank, -int(group_size) if _given(group_size) else 0


def plain_log(ax, axis: str = "y") -> None:
    """Log scale with ticks at 1, 2, 5 x 10^n printed as plain numbers (0.05, not 5x10^-2)."""
    getattr(ax, f"set_{axis}scale")("log")
    which = getattr(ax, f"{axis}axis")
    which.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(NullFormatter())
