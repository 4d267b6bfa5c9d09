"""Wide tables for people, pivoted from the long-format results (storage stays long)."""

from __future__ import annotations

import math

import pandas as pd

from ..results import HOST_ANCHOR_SHAPE
from .choice import choice_tables
from .labels import format_label, shape_label


def _label(row: pd.Series) -> dict[str, str]:
    """Compact case labels: the shape (with M and a stack's layer count), the dtype, the quantization format."""
    shape = shape_label(row["N"], row["K"], row.get("shape_name"), row.get("M"), row.get("layers"))
    fmt_ = format_label(row.get("bits"), row.get("scheme"), row.get("granularity"), row.get("group_size"))
    return {"shape": shape, "dtype": row["dtype"], "format": fmt_}


def with_labels(d: pd.DataFrame) -> pd.DataFrame:
    """d with its case labels (labels.py) as the first columns: shape, dtype, format."""
    labels = pd.DataFrame([_label(r) for _, r in d.iterrows()], index=d.index, columns=["shape", "dtype", "format"])
    return pd.concat([labels, d.drop(columns=[c for c in ("dtype",) if c in d])], axis=1)


def impls_in_role(df: pd.DataFrame, role: str) -> list[str]:
    """The implementations of these rows that have `role` (reference, candidate, peer, baseline),
    in the order they first appear."""
    return list(dict.fromkeys(df.loc[df["role"] == role, "impl"]))


def host_x_linear(d: pd.DataFrame) -> pd.Series:
    """Each row's host time per call over F.linear's measured in the same moments (host_linear_us,
    schema 7 on: execution/host_time.py), so that the host's speed cancels; NaN where a row has no
    host time (the CPU, a failed case) or its run no host_linear_us."""
    if "host_linear_us" not in d:
        return pd.Series(math.nan, index=d.index)
    linear = d["host_linear_us"].astype(float)
    return d["host_us"].astype(float) / linear.where(linear > 0)


def op_table(df: pd.DataFrame, op: str, copy_gbps: float | None = None) -> pd.DataFrame:
    """One row per case of `op`: median ms per implementation, the speedup of each candidate over
    every other implementation, each implementation's host time per call (GPU runs), each
    candidate's kernel variant and its tile (where it picks them: path, kernel config), GB/s (its
    share of the measured copy bandwidth) and TFLOP/s, and the memory and error of the case's
    quantized weight (of the output, for products). With one candidate its share columns carry no name ("% of copy")."""
    d = df[(df["op"] == op) & (df["status"] == "ok")]
    if d["depth"].notna().any():
        d = d[d["ms"].notna()]  # a stack: its timed row is the last depth's
    if d.empty:
        return pd.DataFrame()
    d = with_labels(d)
    keys = ["shape", "dtype", "format"]
    ms = d.pivot_table(index=keys, columns="impl", values="ms", aggfunc="first", sort=False)
    out = ms.rename(columns=lambda impl: f"ms {impl}")
    candidates = [c for c in impls_in_role(d, "candidate") if c in ms.columns]
    for cand in candidates:
        for impl in ms.columns:
            if impl != cand:
                out[f"{cand} vs {impl}"] = out[f"ms {impl}"] / out[f"ms {cand}"]
    if "host_us" in d and d["host_us"].notna().any():  # GPU runs since schema 4
        host = d.pivot_table(index=keys, columns="impl", values="host_us", aggfunc="first", sort=False)
        for impl in host.columns:
            out[f"host us {impl}"] = host[impl]
    named = (lambda col, cand: col) if len(candidates) == 1 else (lambda col, cand: f"{col} {cand}")
    by_candidate = {cand: d[d["impl"] == cand].set_index(keys) for cand in candidates}
    for cand, rows in by_candidate.items():
        if "host_linear_us" in rows and rows["host_linear_us"].notna().any():  # schema 7 on
            out[named("host x F.linear", cand)] = host_x_linear(rows)
        if "path" in rows and rows["path"].notna().any():
            out[named("path", cand)] = rows["path"]
        if "kernel_config" in rows and rows["kernel_config"].notna().any():  # schema 6 on
            out[named("kernel config", cand)] = rows["kernel_config"]
        out[f"GB/s {cand}"] = rows["gbps"]
        if copy_gbps:
            out[named("% of copy", cand)] = 100 * rows["gbps"] / copy_gbps
        if rows["tflops"].notna().any():
            out[f"TFLOP/s {cand}"] = rows["tflops"]
    # the case's format: the reference's rows (an implementation with its own format has its own)
    quantized = d[d["role"] == "reference"]
    quantized = (quantized if not quantized.empty else d[d["role"] != "baseline"]).groupby(keys, sort=False).first()
    out["bits/weight"] = quantized["bits_per_weight"]
    if quantized["method_snr_db"].notna().any():
        out["method SNR dB"] = quantized["method_snr_db"]
        for cand, rows in by_candidate.items():
            out[named("kernel SNR dB", cand)] = rows["kernel_snr_db"]
    else:
        out["SNR dB"] = quantized["snr_db"]
        out["rel err"] = quantized["rel_err"]
    return out.reset_index()


def compact_columns(table: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """The columns `quantbench show` keeps by default, in the table's order: the case (shape,
    format; dtype where the table has several), each candidate's time, its speedup over the
    reference and the dense baseline, its kernel path, and the error of the format (the method's
    SNR for products, the weight's SNR otherwise). The rest (every peer's time and speedup, host
    time, GB/s, TFLOP/s, bits per weight, the kernel's own error) comes with --columns."""
    candidates = impls_in_role(df, "candidate")
    against = impls_in_role(df, "reference") + impls_in_role(df, "baseline")
    keep = {"shape", "format", "depth", "method SNR dB", "SNR dB", *(f"ms {c}" for c in candidates),
            *(f"{c} vs {o}" for c in candidates for o in against)}
    if "dtype" in table and table["dtype"].nunique() > 1:
        keep.add("dtype")
    return [c for c in table.columns if c in keep or c.startswith("path")]


def select_columns(table: pd.DataFrame, patterns: list[str]) -> tuple[pd.DataFrame, set[str]]:
    """The table's columns matching any of the patterns (names or shell globs such as 'ms *'),
    in the table's order, and the patterns that matched."""
    from fnmatch import fnmatchcase
    matched = {p for p in patterns for c in table.columns if fnmatchcase(str(c), p)}
    return table[[c for c in table.columns if any(fnmatchcase(str(c), p) for p in patterns)]], matched


def depth_table(df: pd.DataFrame) -> pd.DataFrame:
    """Stack rows: the output's error relative to its norm (against float64 with the original
    weights), by depth and implementation."""
    d = df[(df["op"] == "stack") & (df["status"] == "ok")]
    if d.empty:
        return pd.DataFrame()
    d = with_labels(d)
    table = d.pivot_table(index=["shape", "dtype", "format", "depth"], columns="impl", values="out_rel_err",
                          aggfunc="first", sort=False)
    return table.rename(columns=lambda impl: f"rel err {impl}").reset_index()


def failures(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    return with_labels(bad)[["op", "impl", "shape", "dtype", "format", "status", "message"]].reset_index(drop=True)


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    # a | inside a cell (an error message's) would start a column of its own; newlines end the row
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")
    head = "| " + " | ".join(cell(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(fmt(v)) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def matmul_shapes_text(calibration: dict) -> str:
    """How the run's matmul ceilings were measured: the best of several M x N x K shapes (or, in
    runs before that, one size^3)."""
    shapes = calibration.get("matmul_shapes")
    if shapes:
        return "best of " + ", ".join("x".join(map(str, s)) for s in shapes)
    return f"{calibration.get('matmul_size')}^3"


def summary_markdown(df: pd.DataFrame, meta: dict) -> str:
    env = meta.get("env", {})
    lines = [f"# {meta.get('run_id', 'run')}", "",
             f"GPU: {env.get('gpu')} | torch {env.get('torch')} | triton {env.get('triton')} | "
             f"commit {str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}", ""]
    if len(df) and not df["timing_valid"].astype(bool).all():
        lines += ["Timings marked invalid were taken on Triton's CPU interpreter: they are not GPU "
                  "timings and say nothing about kernel speed.", ""]
    copy_gbps = meta.get("calibration", {}).get("copy_gbps")
    if copy_gbps:
        lines += [f"Measured device-to-device copy bandwidth (1 GiB, read + write): {copy_gbps:.0f} GB/s; "
                  "'% of copy' is the candidate's GB/s against it.", ""]
    cal = meta.get("calibration", {})
    rates = [f"{label} {cal[key]:.0f}" for key, label in (("fp16_tflops", "fp16"), ("bf16_tflops", "bf16"),
                                                           ("fp32_tflops", "fp32"), ("int8_tops", "int8"))
             if cal.get(key)]
    if rates:
        lines += [f"Measured dense matmul rates (TFLOP/s, int8 TOP/s, {matmul_shapes_text(cal)}): "
                  + ", ".join(rates) + "; `pct_peak_flops` in results.csv is each row's share.", ""]
    if "host_us" in df and df["host_us"].notna().any():
        lines += ["'host us': the CPU time of one call while the GPU is busy (the call only enqueues its "
                  "work), what an eager caller pays on the host per call; the ms columns are GPU time.", ""]
    if "host_linear_us" in df and df["host_linear_us"].notna().any():
        m, n, k = HOST_ANCHOR_SHAPE
        lines += [f"'host x F.linear': the candidate's host us over a float16 F.linear's ({m} x {k} by {n} x {k}) "
                  "timed in batches alternating with its own, so that a host running faster or slower "
                  "while a row was measured moves both alike (`host_linear_us` in results.csv).", ""]
    counts = df["status"].value_counts().to_dict()
    lines += ["Rows: " + ", ".join(f"{k} {v}" for k, v in counts.items()), ""]
    if "flags" in df:
        flagged = df["flags"].dropna().astype(str).str.split(";").explode()
        flagged = flagged[flagged != ""].value_counts().to_dict()
        if flagged:
            lines += ["Flagged rows (see `flags` in results.csv): "
                      + ", ".join(f"{k} {v}" for k, v in flagged.items())
                      + " (throttled: SM clock under 75% of its maximum while timed; noisy: the median's "
                        "relative standard error over timing.target_rse).", ""]
    for op in df["op"].unique():
        table = op_table(df, op, copy_gbps)
        if not table.empty:
            lines += [f"## {op}", "", to_markdown(table), ""]
        for title, choice in choice_tables(df, op):
            lines += [f"## {title}", "", to_markdown(choice), ""]
    depth = depth_table(df)
    if not depth.empty:
        lines += ["## stack: error by depth", "", to_markdown(depth), ""]
    bad = failures(df)
    if not bad.empty:
        lines += ["## Not ok", "", to_markdown(bad), ""]
    return "\n".join(lines)
