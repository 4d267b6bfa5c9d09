"""Compare runs: a baseline against candidates case by case with verdicts a CI gate can trust,
with GPU against GPU and implementation against implementation (gpu_views.py) beside them.

Latency is decided on the raw samples (samples.jsonl[.gz]): a change is the ratio of medians
moving by at least `min_effect`, confirmed by a two-sided Mann-Whitney U test (asv's choice)
rejecting "same distribution" at `alpha`. A move under `min_effect` is `same`, however significant
(with thousands of samples the test calls every 1% shift significant: asv and nvbench call it same
too); a move of `min_effect` or more that the test does not confirm is `unstable`: the samples are
too spread to say. Apart from the verdict, `unstable_timing` flags a case whose median is not
known to its run's timing target on either side (the row flag `noisy`). Latency is judged only
between GPU timings on the same GPU model.

Two modes. `absolute` compares a case's samples as measured. `relative` divides each case's
samples by the median of its anchor measured in the same run (the same workload's dense baseline,
cuBLAS for a product; where an op has none, its PyTorch reference) before the test: a machine 8%
slower everywhere moves nothing, a kernel 10% slower than its neighbours is a regression. That is
the mode for runs from two machines (fresh CI runners); an anchor itself is `unjudged` there.
Accuracy is decided on the error columns: an SNR that drops by more than its tolerance, an error
that rises by more than its tolerance, or a case that was ok and now is not, is a regression.
Thresholds come per op from thresholds.py (YAML). The host's time per call is shown beside, over
F.linear's measured in the same moments (host_linear_us), and never judged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import mannwhitneyu

from ..results import CASE_KEY
from ..results.storage import atomic_write
from .gpu_views import gpu_views, impl_table
from .loaded_run import CompareError, LoadedRun, Run, case_key, gpu_of
from .tables import host_x_linear
from .thresholds import Thresholds, ThresholdSet

# unjudged: the latency could not be judged (interpreter timings, no raw samples, samples that are not numbers,
# two GPU models)
# and the accuracy did not regress: never reported as "same"
VERDICTS = ("regression", "improvement", "same", "unstable", "new", "missing", "unjudged")
MODES = ("absolute", "relative")
ANCHOR_ROLES = ("baseline", "reference")  # relative mode: what a case is divided by, first found
MODE_WORDS = {"absolute": "as measured", "relative": "relative to each case's anchor in its own run"}
SNR_COLUMNS = ("snr_db", "kernel_snr_db")
ERROR_COLUMNS = ("rel_err", "kernel_rel_err")  # a weight's error; an output's error against its own float64 reference
DEFAULT = Thresholds()
HOST_NOTE_EFFECT = 0.10  # compare.md lists the cases whose host time over F.linear's moved this much


def latency_verdict(base: list[float], cand: list[float], t: Thresholds) -> tuple[str, float]:
    """(verdict, p-value) for two sets of timing samples of one case: `same` under min_effect,
    `unstable` at min_effect or more without the U test's confirmation, else `regression` or
    `improvement`; `unjudged` with fewer than two samples on a side, or where the ratio of medians
    or the p-value is not a finite number (NaN samples, a median of 0): every comparison with NaN
    is False, which would otherwise fall through to `improvement`."""
    if len(base) < 2 or len(cand) < 2:
        return "unjudged", math.nan
    p = float(mannwhitneyu(base, cand, alternative="two-sided").pvalue)
    base_median, cand_median = float(pd.Series(base).median()), float(pd.Series(cand).median())
    ratio = cand_median / base_median if base_median else math.nan
    if not (math.isfinite(ratio) and math.isfinite(p)):
        return "unjudged", p
    if abs(ratio - 1) < t.min_effect:
        return "same", p
    if p >= t.alpha:
        return "unstable", p
    return ("regression" if ratio > 1 else "improvement"), p


def unstable_timing(b: pd.Series, c: pd.Series) -> bool:
    """Either side's median was not known to its run's timing target (the row flag `noisy`)."""
    return any("noisy" in str(row.get("flags") or "").split(";") for row in (b, c))


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


def anchors(run: LoadedRun) -> dict[str, str]:
    """Case key -> the key of its anchor in the same run (relative mode): the row of the same
    workload (every case column but impl) whose role comes first in ANCHOR_ROLES. An anchor has
    none of its own."""
    df = run.df
    keys = list(run.keyed().index)
    workload_cols = [c for c in CASE_KEY if c != "impl"]
    workloads = [case_key(v) for v in df[workload_cols].itertuples(index=False)]
    roles = df["role"].tolist() if "role" in df else [None] * len(df)
    first: dict[str, str] = {}
    for role in ANCHOR_ROLES:
        for key, workload, r in zip(keys, workloads, roles):
            if r == role and workload not in first:
                first[workload] = key
    return {key: first[w] for key, w in zip(keys, workloads) if w in first and first[w] != key}


def _relative(samples: dict[str, list[float]], key: str, anchor: str | None) -> list[float] | None:
    """The case's samples over its anchor's median, or None where there is no anchor to divide by."""
    if anchor is None or anchor not in samples or not samples[anchor]:
        return None
    scale = float(pd.Series(samples[anchor]).median())
    return [v / scale for v in samples[key]] if scale > 0 else None


def compare_runs(base_run: Run, cand_run: Run, t: Thresholds | ThresholdSet = DEFAULT,
                 mode: str = "absolute") -> pd.DataFrame:
    """One row per case of either run, joined on the case key: medians, their ratio, p-value, and
    the latency and accuracy verdicts (each case judged by its op's thresholds); `verdict` is the
    worse of the two. Latency is judged only where both runs hold GPU samples from one GPU model;
    in `relative` mode on the samples over their anchor's median (the module's docstring), with
    `relative_ratio` the ratio of those."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    base_run, cand_run = LoadedRun.of(base_run), LoadedRun.of(cand_run)
    base, cand = base_run.keyed(), cand_run.keyed()
    base_host, cand_host = host_x_linear(base), host_x_linear(cand)
    if base.index.intersection(cand.index).empty:
        # every case would be new or missing: a gate on regressions would pass a candidate that lost them all
        raise CompareError(f"{base_run.path} and {cand_run.path} share no case ({len(base)} in the baseline, "
                           f"{len(cand)} in the candidate): nothing to compare; expected runs of one config")
    base_samples, cand_samples = base_run.samples, cand_run.samples
    base_anchor, cand_anchor = (anchors(base_run), anchors(cand_run)) if mode == "relative" else ({}, {})
    same_gpu = gpu_of(base_run.meta) == gpu_of(cand_run.meta)
    rows = []
    for key in dict.fromkeys([*base.index, *cand.index]):
        first = base.loc[key] if key in base.index else cand.loc[key]
        row = {c: first[c] for c in CASE_KEY}
        if key not in cand.index or key not in base.index:
            row["verdict"] = "missing" if key not in cand.index else "new"
            rows.append(row)
            continue
        b, c = base.loc[key], cand.loc[key]
        op_t = t.for_op(row["op"])
        row.update(base_ms=b["ms"], cand_ms=c["ms"], ratio=c["ms"] / b["ms"] if b["ms"] else math.nan)
        # the host's time, each run's over F.linear's in its own moments: the hosts' speeds cancel.
        # Shown, never judged: a row keeps one median of it, no samples to test
        row.update(base_host_x_linear=base_host[key], cand_host_x_linear=cand_host[key],
                   host_ratio=cand_host[key] / base_host[key])
        accuracy, reason = accuracy_verdict(b, c, op_t)
        latency, p = ("unjudged", math.nan)
        # judged: GPU samples on both sides, one GPU model (interpreter timings and cases without samples are not)
        pair = None
        if (same_gpu and key in base_samples and key in cand_samples
                and bool(b["timing_valid"]) and bool(c["timing_valid"])):
            pair = (base_samples[key], cand_samples[key]) if mode == "absolute" else \
                (_relative(base_samples, key, base_anchor.get(key)), _relative(cand_samples, key, cand_anchor.get(key)))
        if pair is not None and None not in pair:
            latency, p = latency_verdict(*pair, op_t)
            if mode == "relative":
                row["relative_ratio"] = float(pd.Series(pair[1]).median() / pd.Series(pair[0]).median())
        judged = latency != "unjudged"
        # a stack's depths before the last are never timed (its time is on the last depth's row):
        # nothing to judge but their accuracy, which is no reason to hold a gate on unjudged latency
        untimed = (pd.notna(first.get("depth")) and b["status"] == c["status"] == "ok"
                   and pd.isna(b["ms"]) and pd.isna(c["ms"]))
        if untimed:
            latency = "untimed"
        row.update(p_value=p, min_effect=op_t.min_effect, latency=latency, latency_judged=judged,
                   unstable_timing=unstable_timing(b, c),
                   accuracy=accuracy, accuracy_reason=reason,
                   verdict="regression" if "regression" in (latency, accuracy) else accuracy if untimed else latency)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Comparison:
    """Every view of two or more runs, the first being the baseline."""

    versus: pd.DataFrame  # each later run against the baseline, case by case (`candidate` names it)
    impls: pd.DataFrame  # implementation against implementation, per run (`run` names it)
    gpus: pd.DataFrame | None = None  # GPU against GPU, when the runs span more than one GPU model
    unshared: pd.DataFrame | None = None  # the cases the GPU table leaves out
    notes: list[str] = field(default_factory=list)
    runs: dict = field(default_factory=dict)  # {"baseline": {run_id, path, gpu, git_commit}, "candidates": [...]}
    thresholds: dict = field(default_factory=dict)  # the thresholds judged by: {"default": {...}, "ops": {op: {...}}}
    mode: str = "absolute"  # latency as measured, or relative to each case's anchor in its own run


def compare_all(runs: list[Run], t: Thresholds | ThresholdSet = DEFAULT, mode: str = "absolute") -> Comparison:
    if len(runs) < 2:
        raise ValueError(f"compare needs a baseline and at least one candidate run, got {len(runs)} run folder(s)")
    loaded = [LoadedRun.of(r) for r in runs]
    base, cands = loaded[0], loaded[1:]
    versus = pd.concat([compare_runs(base, cand, t, mode).assign(candidate=cand.meta.get("run_id", str(cand.path)))
                        for cand in cands], ignore_index=True)
    impls = [impl_table(r).assign(run=r.meta.get("run_id", str(r.path))) for r in loaded]
    impls = [i for i in impls if len(i.columns) > 1]
    result = Comparison(versus, pd.concat(impls, ignore_index=True) if impls else pd.DataFrame(),
                        runs={"baseline": _identity(base), "candidates": [_identity(c) for c in cands]},
                        thresholds=_thresholds_dict(t), mode=mode)
    if len({gpu_of(r.meta) for r in loaded}) > 1:
        try:
            result.gpus, result.unshared = gpu_views(loaded)
        except CompareError as e:  # a run without candidate rows
            result.notes.append(f"No GPU-against-GPU table: {e}.")
    return result


def _identity(run: LoadedRun) -> dict:
    env = run.meta.get("env", {})
    return {"run_id": run.meta.get("run_id"), "path": str(run.path), "gpu": gpu_of(run.meta),
            "git_commit": env.get("git_commit")}


def _thresholds_dict(t: Thresholds | ThresholdSet) -> dict:
    if isinstance(t, Thresholds):
        return {"default": asdict(t), "ops": {}}
    return {"default": asdict(t.default), "ops": {op: asdict(o) for op, o in t.ops.items()}}


VERSUS_COLUMNS = ["candidate", "op", "impl", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K",
                  "depth", "base_ms", "cand_ms", "ratio", "relative_ratio", "p_value", "min_effect", "latency", "accuracy", "accuracy_reason",
                  "verdict"]


def _strict_json(value: Any) -> Any:
    """value with every float that is not finite (NaN, inf) made None, through dicts and lists."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(views: Comparison, out: Path) -> dict:
    """compare.csv (run against run), gpus.csv and unshared.csv (GPU against GPU, where there is
    more than one GPU), impls.csv (implementation against implementation), compare.md (all of
    them, the verdicts first: a CI job summary) and verdict.json (counts and regressions)."""
    from .tables import to_markdown
    out.mkdir(parents=True, exist_ok=True)
    versus = views.versus
    versus.to_csv(out / "compare.csv", index=False)
    counts = {v: int((versus["verdict"] == v).sum()) for v in VERDICTS}
    regressions = versus[versus["verdict"] == "regression"]
    unjudged_cases = versus[versus["verdict"] == "unjudged"]
    case_cols = [c for c in (*CASE_KEY, "candidate") if c in versus]
    flagged = versus.get("unstable_timing", pd.Series(False, index=versus.index)).fillna(False).astype(bool)
    verdict = {"runs": views.runs, "mode": views.mode, "thresholds": views.thresholds, "counts": counts,
               "unstable_timing": int(flagged.sum()), "regressions": regressions.to_dict("records"),
               "unjudged": unjudged_cases[case_cols].to_dict("records")}
    # what a CI gate reads: whole or absent, never cut short; strict JSON (a missing value, NaN in
    # pandas, is null: bare NaN is no JSON, and JSON.parse or jq refuse it)
    atomic_write(out / "verdict.json", json.dumps(_strict_json(verdict), indent=2, default=str, allow_nan=False))
    lines = ["# quantbench compare", "", "## Run against run", "",
             f"Latency {MODE_WORDS[views.mode]} ({views.mode} mode).", "",
             ", ".join(f"{k}: {v}" for k, v in counts.items()), ""]
    judged = versus.get("latency_judged", pd.Series(dtype=bool)).fillna(False).astype(bool)
    unjudged = int((~judged & versus["verdict"].isin(["unjudged", "regression"])).sum())
    if unjudged:
        lines += [f"Latency not judged for {unjudged} case(s): interpreter timings, no raw samples, samples that "
                  "are not numbers, or runs on different GPU models (see GPU against GPU); their accuracy is.", ""]
    cols = [c for c in VERSUS_COLUMNS if c in versus and (c != "candidate" or versus[c].nunique() > 1)]
    changed = versus[~versus["verdict"].isin(["same", "unstable", "unjudged"])]
    if not changed.empty:
        lines += [to_markdown(changed[cols].dropna(axis=1, how="all")), ""]
    unstable = versus[versus["verdict"] == "unstable"]
    if not unstable.empty:
        lines += ["### Unstable", "", "The median moved by min_effect or more, but the U test does not confirm it: "
                  "the samples are too spread to call a change either way. Rerun these cases.", "",
                  to_markdown(unstable[cols].dropna(axis=1, how="all")), ""]
    host_moved = versus[(versus["host_ratio"] - 1).abs() >= HOST_NOTE_EFFECT] if "host_ratio" in versus else versus[:0]
    if not host_moved.empty:
        host_cols = [c for c in (*case_cols, "base_host_x_linear", "cand_host_x_linear", "host_ratio") if c in versus]
        lines += ["### Host time", "", f"Cases whose host time per call over F.linear's (`host_x_linear`, each "
                  f"run's measured in the same moments) moved by {HOST_NOTE_EFFECT:.0%} or more. Not judged: a "
                  "row keeps one median of it.", "", to_markdown(host_moved[host_cols]), ""]
    if flagged.any():
        lines += [f"{int(flagged.sum())} case(s) have a median that one run did not know to its timing target "
                  "(`unstable_timing` in compare.csv; the row flag `noisy`).", ""]
    if views.gpus is not None:
        views.gpus.to_csv(out / "gpus.csv", index=False)
        views.unshared.to_csv(out / "unshared.csv", index=False)
        lines += ["## GPU against GPU", "", "Each candidate's time, its speedup over each implementation measured beside it, "
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
