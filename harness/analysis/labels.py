"""How a case reads wherever it is shown: its quantization format ('int4 asym g128'), its shape
('q_proj M=16 4096x4096 L=3') and the order of formats, coarse to fine. The tables (tables.py)
and the report's figures (harness/reporting) both label cases with these, so that a format and a
shape read the same in every table and plot."""

from __future__ import annotations

import pandas as pd

SCHEME_SHORT = {"asymmetric": "asym", "symmetric": "sym"}
CODEBOOK_LABELS = {"nf4": "nf4", "nf4_dq": "nf4+dq", "fp8": "fp8"}


def given(value) -> bool:
    """Whether a row's cell holds a value (not None, NaN or NA)."""
    return value is not None and bool(pd.notna(value))


def _whole(value) -> str:
    return f"{value:.0f}"  # as the tables always printed: 16 for 16.0, nan for NaN (int() would raise)


def format_label(bits, scheme, granularity, group_size) -> str:
    """'int4 asym g128', 'int8 sym channel', 'nf4 g64': the quantization format of a row, compactly; '-' for a
    row without one (an unquantized baseline)."""
    if not given(bits):
        return "-"
    gran = f"g{_whole(group_size)}" if granularity == "group" and given(group_size) else str(granularity)
    if scheme in CODEBOOK_LABELS:  # the scheme names the codes: 'nf4 g64', 'nf4+dq g64', 'fp8 channel'
        return f"{CODEBOOK_LABELS[scheme]} {gran}"
    return f"int{_whole(bits)} {SCHEME_SHORT.get(scheme, scheme)} {gran}"


def shape_label(n, k, shape_name=None, m=None, layers=None) -> str:
    """'4096x4096', 'q_proj M=16 4096x4096 L=3': N x K after the shape's name and M where given,
    then the layer count of a stack where given."""
    parts = [str(shape_name) if given(shape_name) else None, f"M={_whole(m)}" if given(m) else None,
             f"{_whole(n)}x{_whole(k)}", f"L={_whole(layers)}" if given(layers) else None]
    return " ".join(p for p in parts if p is not None)


def format_order(granularity: str, group_size) -> tuple[int, int]:
    """Coarse to fine: tensor, channel, then groups by decreasing size."""
    rank = {"tensor": 0, "channel": 1, "group": 2}.get(granularity, 3)
    return rank, -int(group_size) if given(group_size) else 0
