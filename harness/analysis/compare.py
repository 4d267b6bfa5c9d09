"""Compare runs: a baseline against candidates case by case with verdicts a CI gate can trust,
with GPU against GPU and implementation against implementation (gpu_views.py) beside them.

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

from ..results import CASE_KEY
from ..results.storage import atomic_write
from .gpu_views import gpu_views, impl_table
from .loaded_run import CompareError, LoadedRun, Run, gpu_of, keyed
from .thresholds import Thresholds, ThresholdSet

# unjudged: the latency could not be judged (interpreter timings, no raw samples, two GPU models)
# and the accuracy did not regress: never reported as "same"
VERDICTS = ("regression", "improvement", "same", "noisy", "new", "missing", "unjudged")
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


def compare_runs(base_run: Run, cand_run: Run, t: Thresholds | ThresholdSet = DEFAULT) -> pd.DataFrame:
    """One row per case of either run, joined on the case key: medians, their ratio, p-value, and
    the latency and accuracy verdicts (each case judged by its op's thresholds); `verdict` is the
    worse of the two. Latency is judged only where both runs hold GPU samples from one GPU model."""
    base_run, cand_run = LoadedRun.of(base_run), LoadedRun.of(cand_run)
    base, cand = keyed(base_run.df), keyed(cand_run.df)
    base_samples, cand_samples = base_run.samples, cand_run.samples
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
        accuracy, reason = accuracy_verdict(b, c, op_t)
        latency, p = ("unjudged", math.nan)
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
    if len({gpu_of(r.meta) for r in loaded}) > 1:
        try:
            result.gpus, result.unshared = gpu_views(loaded)
        except CompareError as e:  # a run without candidate rows
            result.notes.append(f"No GPU-against-GPU table: {e}.")
    return result


VERSUS_COLUMNS = ["candidate", "op", "impl", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K",
                  "base_ms", "cand_ms", "ratio", "p_value", "min_effect", "latency", "accuracy", "accuracy_reason",
                  "verdict"]


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
    verdict = {"counts": counts, "regressions": regressions.to_dict("records")}
    # what a CI gate reads: whole or absent, never cut short
    atomic_write(out / "verdict.json", json.dumps(verdict, indent=2, default=str))
    lines = ["# quantbench compare", "", "## Run against run", "", ", ".join(f"{k}: {v}" for k, v in counts.items()),
             ""]
    judged = versus.get("latency_judged", pd.Series(dtype=bool)).fillna(False).astype(bool)
    unjudged = int((~judged & versus["verdict"].isin(["unjudged", "regression"])).sum())
    if unjudged:
        lines += [f"Latency not judged for {unjudged} case(s): interpreter timings, no raw samples, or runs on "
                  "different GPU models (see GPU against GPU); their accuracy is.", ""]
    cols = [c for c in VERSUS_COLUMNS if c in versus and (c != "candidate" or versus[c].nunique() > 1)]
    changed = versus[~versus["verdict"].isin(["same", "noisy", "unjudged"])]
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
