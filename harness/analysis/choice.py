"""Which implementation to pick: the question a run with peers answers (configs/peers.yaml).

For each weight (shape and dtype), bit width and M, the fastest implementation whose output passed
verification, its speedup over the unquantized dense baseline, its bits per weight and its output
error, with every other implementation's time (and speedup) beside it. Formats of one bit width
compete with each other here (int4 per group against NF4, say): a user choosing a 4-bit library
picks among all of them, and the bits and the error say what each one costs.

Only rows that passed verification can be the fastest. A row that failed it stays in its column as
`error` (a fast wrong answer is a finding, not a choice); a case an implementation does not run
is left out of its column (`-`), its reason is in the run's "not ok" table.
"""

from __future__ import annotations

import pandas as pd

from .labels import format_label, shape_label

PICKABLE = ("candidate", "peer")  # the reference (the seed's PyTorch path) and the baseline are yardsticks
# the table's first columns (shape, dtype, M, 'dense us', 'fastest', 'x dense', 'bits/weight',
# 'out rel err'): its compact form; one column per implementation follows
SUMMARY_COLUMNS = 8


def _implementation_labels(d: pd.DataFrame) -> pd.Series:
    """'triton nf4 g64' where an implementation runs several formats of one bit width in the run,
    else its name ('tinygemm')."""
    formats = d.apply(lambda r: format_label(r["bits"], r["scheme"], r["granularity"], r["group_size"]), axis=1)
    several = d.assign(format=formats).groupby(["impl", "bits"])["format"].transform("nunique") > 1
    return d["impl"].where(~several, d["impl"] + " " + formats)


def choice_table(df: pd.DataFrame, op: str, bits: int) -> pd.DataFrame:
    """One row per (shape, dtype, M) of `op` with `bits`-bit weights that has a dense baseline and
    a verified implementation to pick: shape, dtype, M, 'dense us', 'fastest', 'x dense',
    'bits/weight', 'out rel err', then one column per implementation: 'us (x dense)', or 'error'."""
    d = df[(df["op"] == op) & df["status"].isin(["ok", "error"])]
    base = d[(d["role"] == "baseline") & (d["status"] == "ok")]
    d = d[d["role"].isin(PICKABLE) & (d["bits"] == bits)]
    if base.empty or d.empty or d.loc[d["status"] == "ok", "ms"].isna().all():
        return pd.DataFrame()
    # a run of N and K axes has no shape names: NaN keys would never be found in base_us
    base, d = (t.assign(shape_name=t["shape_name"].astype(object).where(t["shape_name"].notna(), ""))
               for t in (base, d))
    d = d.assign(label=_implementation_labels(d))
    weight = ["shape_name", "N", "K", "dtype"]
    base_us = base.groupby(weight + ["M"], dropna=False)["ms"].min() * 1e3
    columns = list(dict.fromkeys(d.sort_values("impl", kind="stable")["label"]))
    rows = []
    for (name, n, k, dtype, m), group in d.groupby(weight + ["M"], dropna=False, sort=False):
        dense = base_us.get((name, n, k, dtype, m))
        ok = group[(group["status"] == "ok") & group["ms"].notna()]
        if dense is None or ok.empty:
            continue
        best = ok.loc[ok["ms"].idxmin()]
        row = {"shape": shape_label(n, k, name or None), "dtype": dtype, "M": int(m), "dense us": dense,
               "fastest": best["label"], "x dense": dense / (best["ms"] * 1e3),
               "bits/weight": best["bits_per_weight"], "out rel err": best["out_rel_err"]}
        for label in columns:
            mine = group[group["label"] == label]
            if mine.empty:
                row[label] = "-"
            elif (mine["status"] == "ok").any():
                us = mine.loc[mine["status"] == "ok", "ms"].iloc[0] * 1e3
                row[label] = f"{us:.1f} ({dense / us:.2f}x)"
            else:
                row[label] = "error"
        rows.append(row)
    return pd.DataFrame(rows)


def choice_tables(df: pd.DataFrame, op: str) -> list[tuple[str, pd.DataFrame]]:
    """(title, choice_table) for each bit width of `op`'s weights, where the run measured a peer of
    it: a run of the project's kernels alone has its per-case tables (tables.op_table) and no
    choice to show."""
    if not ((df["op"] == op) & (df["role"] == "peer") & (df["status"] == "ok")).any():
        return []
    widths = sorted(df.loc[(df["op"] == op) & df["role"].isin(PICKABLE) & df["bits"].notna(), "bits"].unique())
    tables = [(f"{op}, {int(b)}-bit weights: the fastest by M", choice_table(df, op, b)) for b in widths]
    return [(title, t) for title, t in tables if not t.empty]
