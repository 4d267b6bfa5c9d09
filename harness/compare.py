"""Compare runs: a baseline against a candidate, case by case, with verdicts a CI gate can trust.

Latency is decided on the raw samples (samples.jsonl): a two-sided Mann-Whitney U test (asv's
choice) must reject "same distribution" at `alpha`, and the ratio of medians must move by at
least `min_effect`; a difference that passes only one of the two is noise, not a change.
Accuracy is decided on the error columns: an SNR that drops by more than `snr_tolerance_db` is a
regression, as is a case that was ok and now is not.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy.stats import mannwhitneyu

from .results import IDENTITY, load_run, read_lines

KEY = [c for c in IDENTITY if c not in ("run_id", "device", "gpu", "status", "message")]
VERDICTS = ("regression", "improvement", "same", "noisy", "new", "missing")


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.002
    min_effect: float = 0.10
    snr_tolerance_db: float = 0.5


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
    return {_key(rec.get(c) for c in KEY): rec["samples_ms"] for rec in read_lines(run / "samples.jsonl")}


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index(pd.Index([_key(row) for row in df[KEY].itertuples(index=False)], name="key"))


def compare_runs(base_dir: str | Path, cand_dir: str | Path, t: Thresholds = Thresholds()) -> pd.DataFrame:
    """One row per case of either run, joined on the case key: medians, their ratio, p-value, and
    the latency and accuracy verdicts; `verdict` is the worse of the two."""
    base_dir, cand_dir = Path(base_dir), Path(cand_dir)
    base, cand = _keyed(load_run(base_dir)[0]), _keyed(load_run(cand_dir)[0])
    base_samples, cand_samples = _samples(base_dir), _samples(cand_dir)
    rows = []
    for key in dict.fromkeys([*base.index, *cand.index]):
        first = base.loc[key] if key in base.index else cand.loc[key]
        row = {c: first[c] for c in KEY}
        if key not in cand.index or key not in base.index:
            row["verdict"] = "missing" if key not in cand.index else "new"
            rows.append(row)
            continue
        b, c = base.loc[key], cand.loc[key]
        row.update(base_ms=b["ms"], cand_ms=c["ms"], ratio=c["ms"] / b["ms"] if b["ms"] else math.nan)
        accuracy = "same"
        if b["status"] == "ok" and c["status"] != "ok":
            accuracy = "regression"
        else:
            for col in ("kernel_snr_db", "snr_db"):
                if pd.notna(b.get(col)) and pd.notna(c.get(col)) and b[col] - c[col] > t.snr_tolerance_db:
                    accuracy = "regression"
        latency, p = ("same", math.nan)
        # judged: GPU samples on both sides (interpreter timings and cases without samples are not)
        judged = key in base_samples and key in cand_samples and bool(b["timing_valid"]) and bool(c["timing_valid"])
        if judged:
            latency, p = latency_verdict(base_samples[key], cand_samples[key], t)
        row.update(p_value=p, latency=latency, latency_judged=judged, accuracy=accuracy,
                   verdict="regression" if "regression" in (latency, accuracy) else latency)
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(table: pd.DataFrame, out: Path) -> dict:
    """compare.csv, compare.md (a CI job summary) and verdict.json (counts and regressions)."""
    from .summary import to_markdown
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    counts = {v: int((table["verdict"] == v).sum()) for v in VERDICTS}
    verdict = {"counts": counts, "regressions": table[table["verdict"] == "regression"].to_dict("records")}
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str))
    lines = ["# quantbench compare", "", ", ".join(f"{k}: {v}" for k, v in counts.items()), ""]
    changed = table[table["verdict"] != "same"]
    if not changed.empty:
        cols = [c for c in ["op", "impl", "bits", "granularity", "group_size", "dtype", "M", "N", "K", "base_ms",
                            "cand_ms", "ratio", "p_value", "latency", "accuracy", "verdict"] if c in changed]
        lines += [to_markdown(changed[cols]), ""]
    (out / "compare.md").write_text("\n".join(lines))
    return verdict


WORKLOAD = [c for c in KEY if c != "impl"]


def gpu_table(runs: list[str | Path]) -> pd.DataFrame:
    """GPU against GPU: for each case the runs share, each run's Triton time, its speedup over
    every other implementation measured beside it, and its share of that GPU's own measured copy
    bandwidth, side by side (ratios within one GPU compare fairly across GPUs; absolute times do
    not). Columns are named after the GPU (and the run, where two runs share a GPU)."""
    loaded = [load_run(run) for run in runs]
    gpus = [meta.get("env", {}).get("gpu", "?") for _, meta in loaded]
    frames, labels = [], None
    for (df, meta), gpu in zip(loaded, gpus, strict=True):
        name = gpu if gpus.count(gpu) == 1 else f"{gpu} [{meta.get('run_id')}]"
        ok = df[(df["status"] == "ok") & df["ms"].notna()].copy()
        ok["workload"] = [_key(row) for row in ok[WORKLOAD].itertuples(index=False)]
        ms = ok.pivot_table(index="workload", columns="impl", values="ms", aggfunc="first")
        if "triton" not in ms:
            raise ValueError(f"{meta.get('run_id')}: no triton rows to compare")
        wide = pd.DataFrame({f"{name}: ms triton": ms["triton"]})
        for impl in ms.columns.drop("triton"):
            wide[f"{name}: triton vs {impl}"] = ms[impl] / ms["triton"]
        copy_gbps = meta.get("calibration", {}).get("copy_gbps")
        if copy_gbps:
            wide[f"{name}: % of copy"] = 100 * ok[ok["impl"] == "triton"].set_index("workload")["gbps"] / copy_gbps
        frames.append(wide)
        labels = ok.drop_duplicates("workload").set_index("workload")[
            ["op", "bits", "scheme", "granularity", "group_size", "dtype", "M", "N", "K"]]
    table = pd.concat(frames, axis=1, join="inner")
    return labels.join(table, how="inner").reset_index(drop=True)
