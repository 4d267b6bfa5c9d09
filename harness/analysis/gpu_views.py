"""Views across implementations and GPUs: each candidate against every implementation measured
beside it, within a run (impl_table) and GPU against GPU (gpu_views), with each candidate's share
of its own GPU's roofline."""

from __future__ import annotations

import pandas as pd

from ..results import CASE_KEY
from .loaded_run import CompareError, LoadedRun, Run, case_key, gpu_of
from .tables import impls_in_role, op_table, with_labels


WORKLOAD = [c for c in CASE_KEY if c != "impl"]
CASE_LABELS = ["shape", "dtype", "format"]  # tables.with_labels' names for a case within an op
LABELS = ["op", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K"]


def roofline_share(df: pd.DataFrame) -> pd.Series:
    """Each row's share (%) of its own GPU's roofline: the roofline's time for the row's bytes and
    FLOPs at the run's measured copy bandwidth and matmul rate, max(bytes / BW, FLOPs / peak), over
    the measured time; that is the larger of pct_peak_bw and pct_peak_flops."""
    return df[["pct_peak_bw", "pct_peak_flops"]].astype(float).max(axis=1, skipna=True)


def gpu_names(metas: list[dict]) -> list[str]:
    """Each run's column prefix in the GPU table: its GPU, with the run id where two runs share a GPU."""
    gpus = [gpu_of(m) or "?" for m in metas]
    return [g if gpus.count(g) == 1 else f"{g} [{m.get('run_id')}]" for g, m in zip(gpus, metas, strict=True)]


def _timed_workloads(run: LoadedRun) -> pd.DataFrame:
    """The run's timed ok rows, each with its workload (the case key less the implementation)."""
    ok = run.df[(run.df["status"] == "ok") & run.df["ms"].notna()].copy()
    ok["workload"] = [case_key(row) for row in ok[WORKLOAD].itertuples(index=False)]
    return ok


def gpu_views(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GPU against GPU: (table, unshared).

    table: for each case the runs share, each run's candidate times (the implementations in the
    candidate role), each candidate's speedup over every other implementation measured beside it,
    and its share of that GPU's own roofline and of its measured copy bandwidth, side by side
    (ratios within one GPU compare fairly across GPUs; absolute times do not). Columns are named
    after the GPU (and the run, where two runs share a GPU), and the share columns after the
    candidate where a run has several.
    unshared: the timed cases with a candidate row that some runs lack, with the runs that have
    them, so that the table never drops a case unsaid."""
    loaded = [LoadedRun.of(r) for r in runs]
    paths = [r.path.resolve() for r in loaded]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise CompareError(f"{', '.join(twice)}: given twice; each run is one column group of the table")
    names = gpu_names([r.meta for r in loaded])
    if clash := [n for n in names if names.count(n) > 1]:
        shared = [str(r.path) for r, n in zip(loaded, names, strict=True) if n == clash[0]]
        raise CompareError(f"{', '.join(shared)}: two runs share a run id on one GPU ({clash[0]}): their columns would "
                           f"collide; expected different runs (a copied run folder keeps its run id)")
    frames, labels, present = [], [], {}
    for run, name in zip(loaded, names, strict=True):
        ok = _timed_workloads(run)
        ms = ok.pivot_table(index="workload", columns="impl", values="ms", aggfunc="first")
        candidates = [c for c in impls_in_role(ok, "candidate") if c in ms]
        if not candidates:
            raise CompareError(f"{run.path}: no timed rows of a candidate implementation to put beside the other GPUs")
        copy_gbps = run.meta.get("calibration", {}).get("copy_gbps")
        wide = pd.DataFrame(index=ms.index)
        for cand in candidates:
            rows = ok[ok["impl"] == cand].set_index("workload")
            suffix = "" if len(candidates) == 1 else f" {cand}"
            wide[f"{name}: ms {cand}"] = ms[cand]
            for impl in ms.columns.drop(cand):
                wide[f"{name}: {cand} vs {impl}"] = ms[impl] / ms[cand]
            wide[f"{name}: % of roofline{suffix}"] = roofline_share(rows)
            if copy_gbps:
                wide[f"{name}: % of copy{suffix}"] = 100 * rows["gbps"] / copy_gbps
        for w in ok.loc[ok["impl"].isin(candidates), "workload"].unique():
            present.setdefault(w, []).append(name)
        frames.append(wide.dropna(how="all", subset=[f"{name}: ms {c}" for c in candidates]))
        labels.append(ok.drop_duplicates("workload").set_index("workload")[LABELS])
    table = labels[0].join(pd.concat(frames, axis=1, join="inner"), how="inner").reset_index(drop=True)
    partial = [w for w, where in present.items() if len(where) < len(loaded)]
    all_labels = pd.concat(labels)
    unshared = all_labels[~all_labels.index.duplicated()].reindex(partial)
    unshared["only in"] = [", ".join(present[w]) for w in partial]
    return table, unshared.reset_index(drop=True)


def gpu_table(runs: list[Run]) -> pd.DataFrame:
    """The table of gpu_views."""
    return gpu_views(runs)[0]


def impl_table(run: Run) -> pd.DataFrame:
    """Implementation against implementation within one run: per op, shape and format, each
    implementation's median ms, the speedup of each candidate over every other implementation, and
    each candidate's share of the GPU's roofline."""
    df = LoadedRun.of(run).df
    frames = []
    for op in df["op"].dropna().unique():
        table = op_table(df, op)
        if table.empty:
            continue
        keep = [c for c in table.columns if c in CASE_LABELS or c.startswith("ms ") or " vs " in c]
        table = table[keep]
        timed = df[(df["op"] == op) & (df["status"] == "ok") & df["ms"].notna()]
        for cand in impls_in_role(timed, "candidate"):
            rows = with_labels(timed[timed["impl"] == cand])
            share = roofline_share(rows).groupby([rows[c] for c in CASE_LABELS]).last()  # a stack: its last depth
            table[f"% of roofline {cand}"] = share.reindex(pd.MultiIndex.from_frame(table[CASE_LABELS])).to_numpy()
        frames.append(table.assign(op=op))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    ms = [c for c in out.columns if c.startswith("ms ")]
    speedups = [c for c in out.columns if " vs " in c]
    return out[["op", *CASE_LABELS, *ms, *speedups, *[c for c in out.columns if c.startswith("% of roofline ")]]]
