"""Compare runs: a baseline against candidates case by case with verdicts a CI gate can trust,
GPU against GPU, and implementation against implementation within a run.

Latency is decided on the raw samples (samples.jsonl[.gz]): a two-sided Mann-Whitney U test (asv's
choice) must reject "same distribution" at `alpha`, and the ratio of medians must move by at
least `min_effect`; a difference that passes only one of the two is noise, not a change. Latency
is judged only between GPU timings on the same GPU model.
Accuracy is decided on the error columns: an SNR that drops by more than its tolerance, an error
that rises by more than its tolerance, or a case that was ok and now is not, is a regression.
Thresholds come per op from thresholds.py (YAML).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy.stats import mannwhitneyu

from .results import IDENTITY, RunFolderError, load_run, read_samples
from .thresholds import Thresholds, ThresholdSet

KEY = [c for c in IDENTITY if c not in ("run_id", "device", "gpu", "status", "message")]
VERDICTS = ("regression", "improvement", "same", "noisy", "new", "missing")
SNR_COLUMNS = ("snr_db", "kernel_snr_db")
ERROR_COLUMNS = ("rel_err", "kernel_rel_err")  # a weight's error; an output's error against its own float64 reference
DEFAULT = Thresholds()


def latency_verdict(base: list[float], cand: list[float], t: Thresholds) -> tuple[str, float]:
    """(verdict, p-value) for two sets of timing samples of one case."""
    if len(base) < 2 or len(cand) < 2:
        return "noisy", math.nan
    p = float(mannwhitneyu(base, cand, alternative="two-sided").pvalue)
    ratio = float(pd.Series(cand).median() / pd.Series(base).median())
    if p >= t.alpha or abs(ratio - 1) < t.min_effect:
        # within the noise, or too small to matter: "noisy" when the test alone saw a change
        return ("noisy" if p < t.alpha or abs(ratio - 1) >= t.min_effect else "same"), p
    return ("regression" if ratio > 1 else "improvement"), p


def accuracy_verdict(b: pd.Series, c: pd.Series, t: Thresholds) -> tuple[str, str]:
    """(verdict, reason) for one case's row in the baseline and in the candidate."""
    if b["status"] == "ok" and c["status"] != "ok":
        return "regression", f"was ok, now {c['status']}: {c.get('message')}"
    reasons = []
    for col in SNR_COLUMNS:
        # written as a comparison, not a difference: an SNR may be inf (an exact result) on both sides
        if pd.notna(b.get(col)) and pd.notna(c.get(col)) and c[col] + t.snr_tolerance_db < b[col]:
            reasons.append(f"{col} {b[col]:.2f} -> {c[col]:.2f} dB")
    for col in ERROR_COLUMNS:
        before, after = b.get(col), c.get(col)
        if pd.notna(before) and pd.notna(after) and after - before > max(t.error_rise * before, t.error_floor):
            reasons.append(f"{col} {before:.3g} -> {after:.3g}")
    return ("regression", "; ".join(reasons)) if reasons else ("same", "")


def _key(values) -> str:
    """A case's identity as text, the same whether read from results.csv (NaN, 8.0) or from a
    JSON line (null, 8)."""
    def norm(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    return "|".join(norm(v) for v in values)


def _samples(run: Path) -> dict[str, list[float]]:
    return {_key(rec.get(c) for c in KEY): rec["samples_ms"] for rec in read_samples(run)}


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index(pd.Index([_key(row) for row in df[KEY].itertuples(index=False)], name="key"))


def _gpu(meta: dict) -> str | None:
    return (meta.get("env") or {}).get("gpu")


class CompareError(RunFolderError):
    """A run folder that cannot be compared as asked; the message names it and the reason."""


@dataclass
class LoadedRun:
    """A run folder read once: its table, its metadata and (on first use) its raw samples by case."""

    path: Path
    df: pd.DataFrame
    meta: dict
    _samples: dict[str, list[float]] | None = None

    @classmethod
    def of(cls, run: str | Path | LoadedRun) -> LoadedRun:
        return run if isinstance(run, LoadedRun) else cls(Path(run), *load_run(run))

    @property
    def samples(self) -> dict[str, list[float]]:
        if self._samples is None:
            self._samples = _samples(self.path)
        return self._samples


Run = str | Path | LoadedRun


def compare_runs(base_run: Run, cand_run: Run, t: Thresholds | ThresholdSet = DEFAULT) -> pd.DataFrame:
    """One row per case of either run, joined on the case key: medians, their ratio, p-value, and
    the latency and accuracy verdicts (each case judged by its op's thresholds); `verdict` is the
    worse of the two. Latency is judged only where both runs hold GPU samples from one GPU model."""
    base_run, cand_run = LoadedRun.of(base_run), LoadedRun.of(cand_run)
    base, cand = _keyed(base_run.df), _keyed(cand_run.df)
    base_samples, cand_samples = base_run.samples, cand_run.samples
    same_gpu = _gpu(base_run.meta) == _gpu(cand_run.meta)
    rows = []
    for key in dict.fromkeys([*base.index, *cand.index]):
        first = base.loc[key] if key in base.index else cand.loc[key]
        row = {c: first[c] for c in KEY}
        if key not in cand.index or key not in base.index:
            row["verdict"] = "missing" if key not in cand.index else "new"
            rows.append(row)
            continue
        b, c = base.loc[key], cand.loc[key]
        op_t = t.for_op(row["op"])
        row.update(base_ms=b["ms"], cand_ms=c["ms"], ratio=c["ms"] / b["ms"] if b["ms"] else math.nan)
        accuracy, reason = accuracy_verdict(b, c, op_t)
        latency, p = ("same", math.nan)
        # judged: GPU samples on both sides, one GPU model (interpreter timings and cases without samples are not)
        judged = (same_gpu and key in base_samples and key in cand_samples
                  and bool(b["timing_valid"]) and bool(c["timing_valid"]))
        if judged:
            latency, p = latency_verdict(base_samples[key], cand_samples[key], op_t)
        row.update(p_value=p, min_effect=op_t.min_effect, latency=latency, latency_judged=judged,
                   accuracy=accuracy, accuracy_reason=reason,
                   verdict="regression" if "regression" in (latency, accuracy) else latency)
        rows.append(row)
    return pd.DataFrame(rows)


WORKLOAD = [c for c in KEY if c != "impl"]
CASE_LABELS = ["shape", "dtype", "format"]  # summary.with_labels' names for a case within an op
LABELS = ["op", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K"]


def roofline_share(df: pd.DataFrame) -> pd.Series:
    """Each row's share (%) of its own GPU's roofline: the roofline's time for the row's bytes and
    FLOPs at the run's measured copy bandwidth and matmul rate, max(bytes / BW, FLOPs / peak), over
    the measured time; that is the larger of pct_peak_bw and pct_peak_flops."""
    return df[["pct_peak_bw", "pct_peak_flops"]].astype(float).max(axis=1, skipna=True)


def gpu_names(metas: list[dict]) -> list[str]:
    """Each run's column prefix in the GPU table: its GPU, with the run id where two runs share a GPU."""
    gpus = [_gpu(m) or "?" for m in metas]
    return [g if gpus.count(g) == 1 else f"{g} [{m.get('run_id')}]" for g, m in zip(gpus, metas, strict=True)]


def _timed_workloads(run: LoadedRun) -> pd.DataFrame:
    """The run's timed ok rows, each with its workload (the case key less the implementation)."""
    ok = run.df[(run.df["status"] == "ok") & run.df["ms"].notna()].copy()
    ok["workload"] = [_key(row) for row in ok[WORKLOAD].itertuples(index=False)]
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
    from .summary import impls_in_role
    loaded = [LoadedRun.of(r) for r in runs]
    names = gpu_names([r.meta for r in loaded])
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
    from .summary import impls_in_role, op_table, with_labels
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


@dataclass
class Comparison:
    """Every view of two or more runs, the first being the baseline."""

    versus: pd.DataFrame  # each later run against the baseline, case by case (`candidate` names it)
    impls: pd.DataFrame  # implementation against implementation, per run (`run` names it)
    gpus: pd.DataFrame | None = None  # GPU against GPU, when the runs span more than one GPU model
    unshared: pd.DataFrame | None = None  # the cases the GPU table leaves out
    notes: list[str] = field(default_factory=list)


def compare_all(runs: list[Run], t: Thresholds | ThresholdSet = DEFAULT) -> Comparison:
    if len(runs) < 2:
        raise ValueError(f"compare needs a baseline and at least one candidate run, got {len(runs)} run folder(s)")
    loaded = [LoadedRun.of(r) for r in runs]
    base, cands = loaded[0], loaded[1:]
    versus = pd.concat([compare_runs(base, cand, t).assign(candidate=cand.meta.get("run_id", str(cand.path)))
                        for cand in cands], ignore_index=True)
    impls = [impl_table(r).assign(run=r.meta.get("run_id", str(r.path))) for r in loaded]
    impls = [i for i in impls if len(i.columns) > 1]
    result = Comparison(versus, pd.concat(impls, ignore_index=True) if impls else pd.DataFrame())
    if len({_gpu(r.meta) for r in loaded}) > 1:
        try:
            result.gpus, result.unshared = gpu_views(loaded)
        except CompareError as e:  # a run without Triton rows
            result.notes.append(f"No GPU-against-GPU table: {e}.")
    return result


VERSUS_COLUMNS = ["candidate", "op", "impl", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K",
                  "base_ms", "cand_ms", "ratio", "p_value", "min_effect", "latency", "accuracy", "accuracy_reason",
                  "verdict"]


def write_report(views: Comparison, out: Path) -> dict:
    """compare.csv (run against run), gpus.csv and unshared.csv (GPU against GPU, where there is
    more than one GPU), impls.csv (implementation against implementation), compare.md (all of
    them, the verdicts first: a CI job summary) and verdict.json (counts and regressions)."""
    from .summary import to_markdown
    out.mkdir(parents=True, exist_ok=True)
    versus = views.versus
    versus.to_csv(out / "compare.csv", index=False)
    counts = {v: int((versus["verdict"] == v).sum()) for v in VERDICTS}
    regressions = versus[versus["verdict"] == "regression"]
    verdict = {"counts": counts, "regressions": regressions.to_dict("records")}
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str))
    lines = ["# quantbench compare", "", "## Run against run", "", ", ".join(f"{k}: {v}" for k, v in counts.items()),
             ""]
    judged = versus.get("latency_judged", pd.Series(dtype=bool)).fillna(False).astype(bool)
    unjudged = int((~judged & versus["verdict"].isin(["same", "regression"])).sum())
    if unjudged:
        lines += [f"Latency not judged for {unjudged} case(s): interpreter timings, no raw samples, or runs on "
                  "different GPU models (see GPU against GPU); their accuracy is.", ""]
    cols = [c for c in VERSUS_COLUMNS if c in versus and (c != "candidate" or versus[c].nunique() > 1)]
    changed = versus[~versus["verdict"].isin(["same", "noisy"])]
    if not changed.empty:
        lines += [to_markdown(changed[cols].dropna(axis=1, how="all")), ""]
    noisy = versus[versus["verdict"] == "noisy"]
    if not noisy.empty:
        lines += ["### Noisy", "", "The U test and the size of the change disagree: a significant change smaller "
                  "than min_effect, or one at least that large that the test does not confirm. Not a verdict.", "",
                  to_markdown(noisy[cols].dropna(axis=1, how="all")), ""]
    if views.gpus is not None:
        views.gpus.to_csv(out / "gpus.csv", index=False)
        views.unshared.to_csv(out / "unshared.csv", index=False)
        lines += ["## GPU against GPU", "", "Triton's time, its speedup over each implementation measured beside it, "
                  "and its share of its own GPU's roofline and copy bandwidth: the ratios compare across GPUs.", "",
                  to_markdown(views.gpus), ""]
        if not views.unshared.empty:
            lines += ["Cases not in every run (left out above):", "", to_markdown(views.unshared), ""]
    lines += [*views.notes, ""] if views.notes else []
    if not views.impls.empty:
        views.impls.to_csv(out / "impls.csv", index=False)
        lines += ["## Implementation against implementation", "", to_markdown(views.impls), ""]
    (out / "compare.md").write_text("\n".join(lines))
    return verdict
