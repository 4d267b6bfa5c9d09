"""Measure the latency detector of `quantbench compare` on real GPU samples: how often it raises a
false alarm, and how often it catches a real slowdown.

Input: K >= 6 run folders of one config recorded back to back on one GPU (configs/aa.yaml). Every
ordered pair (base, candidate) of distinct runs goes through compare.compare_runs, the code behind
`quantbench compare`, so the counts are those of the CI gate itself, thresholds included. With
`--versus` the runs come from two machines (the CI case: a baseline from one fresh runner, the
candidate from another): the positional runs from one, the --versus runs from the other, and only
pairs across the two are compared, both ways. `--mode` is compare's (absolute or relative).

- `aa`: the runs as recorded. Every `regression` or `improvement` is a false alarm.
- `slow10`, `slow5` (--slowdowns): the candidate's raw samples (and its median columns) multiplied
  by 1.10 and 1.05 in a scratch copy of its folder, for every case but the baseline and reference
  rows (among which relative mode finds its anchors): a kernel that got slower beside baselines
  that did not. A `regression` of a slowed case is a detection.
- `unstable` (in any experiment): the median moved by min_effect or more, but the U test does not
  confirm it. A move smaller than min_effect is `same` by design (never a `regression`): with a
  10% min_effect, `slow5` is `same` however significant it is.

Only judged cases count (GPU samples on both sides: compare's `latency_judged`). The ordered pairs
are not independent samples: each run is in 2(K - 1) of them, and a pair and its reverse see the
same two sample sets (an A/A false alarm shows up once as `regression`, once as `improvement`).
Read the rates as "the share of comparisons a CI gate would get wrong", not as a binomial estimate.

Writes under OUT:
- detector_power.csv: one row per experiment, pair and case (ratio of medians, p, verdicts);
- detector_power_summary.csv: per experiment, the count of each verdict and the rate;
- detector_power_cases.csv: per case, its median time, the A/A spread and the counts;
- detector_power.md: the same tables, the thresholds used, the GPU and the run folders.

Usage, on the GPU machine, after recording the runs:
    for i in 1 2 3 4 5 6 7 8; do python3 -m quantbench.harness.cli run configs/aa.yaml --out results/h100/aa \\
        --no-progress; done
    python3 scripts/detector_power.py results/h100/aa/aa-* --out results/h100/detector-power
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

from quantbench.harness.analysis.compare import ANCHOR_ROLES, MODES, compare_runs
from quantbench.harness.results import CASE_KEY
from quantbench.harness.config import ConfigError
from quantbench.harness.results import has_samples, load_run, read_samples, write_samples
from quantbench.harness.analysis.tables import to_markdown
from quantbench.harness.analysis.thresholds import ThresholdSet, load_thresholds

MIN_RUNS = 6
SLOWDOWNS = (1.10, 1.05)  # factors applied to the candidate's times
MEDIAN_COLUMNS = ["ms", "ms_p20", "ms_p80", "ms_min", "ms_mean", "ms_std"]
VERDICTS = ["regression", "improvement", "same", "unstable"]


class DetectorInputError(ValueError):
    """Run folders that cannot be measured together; the message names the folder and the reason."""


def check_runs(runs: list[str | Path], across: bool = False) -> list[Path]:
    """At least MIN_RUNS distinct run folders with samples, one config, one GPU (across machines:
    one GPU model; each machine's runs are checked apart, MIN_RUNS // 2 at least)."""
    paths = [Path(r) for r in runs]
    least = MIN_RUNS // 2 if across else MIN_RUNS
    if len(paths) < least:
        raise DetectorInputError(f"need at least {least} run folders of one config"
                                 f"{' from each machine' if across else ''}, got {len(paths)}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise DetectorInputError("the same run folder is given twice: an A/A pair of a run with itself "
                                 "is no measurement")
    metas = []
    for p in paths:
        if not has_samples(p):
            raise DetectorInputError(f"{p}: no samples.jsonl(.gz) (not a run folder, or a run without raw samples)")
        metas.append(_meta(p))
    first, first_meta = paths[0], metas[0]
    for p, meta in zip(paths[1:], metas[1:], strict=True):
        _check_one_config(first, first_meta, p, meta)
        gpu_a, gpu_b = (m.get("env", {}).get("gpu_uuid") or m.get("env", {}).get("gpu") for m in (first_meta, meta))
        if gpu_a != gpu_b:
            raise DetectorInputError(f"{p} was recorded on {gpu_b!r}, {first} on {gpu_a!r}: A/A needs one GPU")
    return paths


def _meta(run: Path) -> dict:
    return json.loads((run / "meta.json").read_text()) if (run / "meta.json").is_file() else {}


def _check_one_config(first: Path, first_meta: dict, run: Path, meta: dict) -> None:
    a, b = first_meta.get("config") or {}, meta.get("config") or {}
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        raise DetectorInputError(f"{run} was run with a different config than {first} "
                                 f"(differs in: {', '.join(changed)}); A/A needs one config")


def check_machines(runs: list[Path], versus: list[Path]) -> None:
    """Two machines' runs: one config and one GPU model between them, and no folder in both."""
    if {p.resolve() for p in runs} & {p.resolve() for p in versus}:
        raise DetectorInputError("a run folder is given for both machines")
    metas = [_meta(runs[0]), _meta(versus[0])]
    _check_one_config(runs[0], metas[0], versus[0], metas[1])
    model_a, model_b = (m.get("env", {}).get("gpu") for m in metas)
    if model_a != model_b:
        raise DetectorInputError(f"{versus[0]} was recorded on {model_b!r}, {runs[0]} on {model_a!r}: "
                                 "A/A across machines needs one GPU model")


def anchor_impls(df: pd.DataFrame) -> set[tuple[str, str]]:
    """(op, impl) of a run table's baseline and reference rows (ANCHOR_ROLES), which the slowdowns
    leave as they are."""
    if "role" not in df:
        return set()
    return {(op, impl) for op, impl, role in df[["op", "impl", "role"]].itertuples(index=False)
            if role in ANCHOR_ROLES}


def slowed_copy(run: Path, factor: float, dest: Path) -> Path:
    """A copy of the run folder `run` in `dest` with the raw samples and the median columns of
    results.csv multiplied by `factor` for every case but the anchors (what kernels that much
    slower would have recorded beside unchanged baselines)."""
    dest.mkdir(parents=True)
    if (run / "meta.json").is_file():
        (dest / "meta.json").write_text((run / "meta.json").read_text())
    df, _ = load_run(run)
    kept = anchor_impls(df)
    write_samples(dest, [rec if (rec["op"], rec["impl"]) in kept else
                         {**rec, "samples_ms": [s * factor for s in rec["samples_ms"]]} for rec in read_samples(run)])
    slowed = [(op, impl) not in kept for op, impl in df[["op", "impl"]].itertuples(index=False)]
    for col in MEDIAN_COLUMNS:
        df.loc[slowed, col] = df.loc[slowed, col] * factor
    df.to_csv(dest / "results.csv", index=False)
    return dest


def case_label(row) -> str:
    """op impl bits granularity... in words, from the case key columns that are set."""
    parts = []
    for col in CASE_KEY:
        v = row[col]
        if v is None or (isinstance(v, float) and pd.isna(v)) or v == "":
            continue
        v = int(v) if isinstance(v, float) and v.is_integer() else v
        parts.append(f"{col}={v}" if col in ("M", "N", "K", "bits", "group_size", "layers", "depth") else str(v))
    return " ".join(parts)


def experiments(slowdowns: tuple[float, ...] = SLOWDOWNS) -> dict[str, float]:
    """{"aa": 1.0, "slow10": 1.1, ...}: experiment name and the factor on the candidate's times."""
    for f in slowdowns:
        if not f > 1.0:
            raise DetectorInputError(f"a slowdown factor must be above 1 (1.10 is 10% slower), got {f}")
    return {"aa": 1.0, **{f"slow{(f - 1) * 100:.3g}": f for f in slowdowns}}


def pairs(n_runs: int, n_versus: int = 0) -> list[tuple[int, int]]:
    """Ordered (base, candidate) index pairs: every two distinct runs; with a second machine's
    n_versus runs (indices from n_runs on), only the pairs across the two machines."""
    if not n_versus:
        return list(itertools.permutations(range(n_runs), 2))
    other = range(n_runs, n_runs + n_versus)
    return [(i, j) for i in range(n_runs) for j in other] + [(j, i) for j in other for i in range(n_runs)]


def measure(runs: list[Path], thresholds: ThresholdSet, slowdowns: tuple[float, ...] = SLOWDOWNS,
            mode: str = "absolute", versus: list[Path] = ()) -> pd.DataFrame:
    """Every experiment on every ordered pair (pairs()): one row per experiment, pair and case;
    `slowed` marks the cases the slowdowns apply to (every case but the anchors)."""
    tables = []
    everything = [*runs, *versus]
    with tempfile.TemporaryDirectory(prefix="detector-power-") as scratch:
        for name, factor in experiments(slowdowns).items():
            cands = everything if factor == 1.0 else [slowed_copy(r, factor, Path(scratch) / name / str(i))
                                                      for i, r in enumerate(everything)]
            for i, j in pairs(len(runs), len(versus)):
                table = compare_runs(everything[i], cands[j], thresholds, mode=mode)
                table.insert(0, "experiment", name)
                table.insert(1, "factor", factor)
                table.insert(2, "base", everything[i].name)
                table.insert(3, "candidate", everything[j].name)
                tables.append(table)
    out = pd.concat(tables, ignore_index=True)
    kept = anchor_impls(load_run(runs[0])[0])
    out["slowed"] = [(op, impl) not in kept for op, impl in out[["op", "impl"]].itertuples(index=False)]
    out["latency_judged"] = out["latency_judged"].fillna(False).astype(bool)  # new/missing rows: not judged
    out["case"] = [case_label(row) for _, row in out.iterrows()]
    return out


def summarize(table: pd.DataFrame, n_pairs: int) -> pd.DataFrame:
    """Per experiment: pairs, cases, judged comparisons, the count of each latency verdict, and the
    rate that matters (A/A: false alarms = regression + improvement; slowdowns: detections =
    regression, over the slowed cases only), each as a share of the judged comparisons."""
    rows = []
    for name, factor in table.groupby("experiment", sort=False)["factor"].first().items():
        t = table[table["experiment"] == name]
        if factor != 1.0:
            t = t[t["slowed"]]
        judged = t[t["latency_judged"]]
        counts = {v: int((judged["latency"] == v).sum()) for v in VERDICTS}
        n = len(judged)
        row = {"experiment": name, "factor": factor, "pairs": n_pairs, "cases": t["case"].nunique(),
               "judged": n, "not_judged": int((~t["latency_judged"]).sum()), **counts}
        alarms = counts["regression"] + counts["improvement"] if factor == 1.0 else counts["regression"]
        row["measure"] = "false_alarm_rate" if factor == 1.0 else "detection_rate"
        row["rate"] = alarms / n if n else float("nan")
        row["unstable_rate"] = counts["unstable"] / n if n else float("nan")
        row["accuracy_regressions"] = int((t["accuracy"] == "regression").sum())
        rows.append(row)
    return pd.DataFrame(rows)


def per_case(table: pd.DataFrame, runs: list[Path]) -> pd.DataFrame:
    """Per case: its median time over the runs, the largest A/A change of the median, and the counts
    of false alarms, unstable verdicts and detections over the pairs where it was judged."""
    medians = pd.concat([load_run(r)[0].assign(case=lambda d: [case_label(row) for _, row in d.iterrows()])
                         for r in runs])
    judged = table[table["latency_judged"]]
    rows = []
    for case, t in judged.groupby("case", sort=False):
        aa = t[t["experiment"] == "aa"]
        row = {"case": case, "median_us": 1000 * medians.loc[medians["case"] == case, "ms"].median(),
               "aa_max_change_pct": 100 * (aa["ratio"] - 1).abs().max(), "aa_pairs": len(aa),
               "aa_false_alarms": int(aa["latency"].isin(["regression", "improvement"]).sum()),
               "aa_unstable": int((aa["latency"] == "unstable").sum())}
        for name in table["experiment"].unique():
            if name != "aa":
                s = t[t["experiment"] == name]
                row[f"{name}_detected"] = int((s["latency"] == "regression").sum())
                row[f"{name}_unstable"] = int((s["latency"] == "unstable").sum())
        rows.append(row)
    return pd.DataFrame(rows)


def describe(thresholds: ThresholdSet) -> str:
    """The latency thresholds in words: the default, then each op that has its own."""
    default = thresholds.default
    text = f"Mann-Whitney U two-sided p < alpha = {default.alpha}, and the median must move by at least " \
           f"min_effect = {default.min_effect:.0%}"
    own = {op: t for op, t in thresholds.ops.items() if (t.alpha, t.min_effect) != (default.alpha, default.min_effect)}
    if own:
        text += "; except " + ", ".join(f"{op}: alpha {t.alpha}, min_effect {t.min_effect:.0%}"
                                        for op, t in own.items())
    return text + "."


def markdown(summary: pd.DataFrame, cases: pd.DataFrame, runs: list[Path],
             thresholds: ThresholdSet, source: str, mode: str = "absolute", versus: list[Path] = ()) -> str:
    meta = json.loads((runs[0] / "meta.json").read_text()) if (runs[0] / "meta.json").is_file() else {}
    env = meta.get("env", {})
    aa = summary.set_index("experiment")
    n_pairs = len(pairs(len(runs), len(versus)))
    machines = (f"{len(runs)} runs on one machine and {len(versus)} on another, the {n_pairs} ordered pairs "
                f"across the two" if versus else f"{len(runs)} runs, {n_pairs} ordered pairs")
    lines = [
        "# Detector power: `quantbench compare` on repeated identical runs", "",
        f"GPU: {env.get('gpu', '?')} | config: {meta.get('config', {}).get('name', '?')} | "
        f"{machines} | torch {env.get('torch', '?')} | triton {env.get('triton', '?')}", "",
        f"Mode: `{mode}`. Thresholds ({source}): {describe(thresholds)}", "",
        f"- A/A false alarms: {int(aa.loc['aa', 'regression'] + aa.loc['aa', 'improvement'])} of "
        f"{int(aa.loc['aa', 'judged'])} judged comparisons ({aa.loc['aa', 'rate']:.2%}); "
        f"unstable: {int(aa.loc['aa', 'unstable'])}.",
    ]
    for name in summary["experiment"]:
        if name != "aa":
            lines.append(f"- slowdown x{aa.loc[name, 'factor']:.2f} detected: {int(aa.loc[name, 'regression'])} of "
                         f"{int(aa.loc[name, 'judged'])} ({aa.loc[name, 'rate']:.2%}); unstable: "
                         f"{int(aa.loc[name, 'unstable'])}, same: {int(aa.loc[name, 'same'])}.")
    lines += ["", "## Counts by experiment", "", to_markdown(summary), "",
              "## By case", "", to_markdown(cases), "",
              "Pairs are not independent: each run is in 2(K - 1) ordered pairs, and an A/A false alarm "
              "counts once as a regression and once, reversed, as an improvement. A slowdown equal to "
              "min_effect sits on the threshold: with little noise it is caught about half the time, "
              "by construction; one below it is `same`.", "",
              "## Run folders", ""]
    lines += [f"- `{r}`" for r in runs]
    if versus:
        lines += ["", "The other machine's:", ""] + [f"- `{r}`" for r in versus]
    return "\n".join(lines) + "\n"


def min_effect_sweep(runs: list[Path], thresholds: ThresholdSet, slowdowns: tuple[float, ...],
                     effects: list[float], mode: str = "absolute", versus: list[Path] = ()) -> pd.DataFrame:
    """Per min_effect (put over every op): the A/A false-alarm rate and each slowdown's detection rate."""
    rows = []
    for effect in effects:
        table = measure(runs, thresholds.overridden(min_effect=effect), slowdowns, mode, versus)
        summary = summarize(table, len(pairs(len(runs), len(versus))))
        rows.append({"min_effect": effect, **{f"{name} {measure_}": rate for name, measure_, rate
                                              in summary[["experiment", "measure", "rate"]].itertuples(index=False)}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help=f"at least {MIN_RUNS} run folders of one config, recorded on one GPU "
                                            f"(with --versus: {MIN_RUNS // 2} or more from one machine)")
    ap.add_argument("--versus", nargs="+", default=[], metavar="RUN",
                    help="the same config's runs from a second machine: only pairs across the two are compared")
    ap.add_argument("--mode", choices=MODES, default="absolute", help="compare's mode (default: absolute)")
    ap.add_argument("--out", required=True, help="folder to write the CSV and markdown files into")
    ap.add_argument("--thresholds", default=None, help="thresholds YAML, as `quantbench compare --thresholds` takes "
                                                       "(default: compare's built-in defaults)")
    ap.add_argument("--alpha", type=float, default=None, help="Mann-Whitney U significance level, for every op")
    ap.add_argument("--min-effect", type=float, default=None,
                    help="smallest relative change of the median that counts, for every op")
    ap.add_argument("--slowdowns", type=float, nargs="+", default=list(SLOWDOWNS),
                    help="factors to inject into the candidate's times (default: 1.10 1.05)")
    ap.add_argument("--sweep-min-effect", type=float, nargs="+", default=[], metavar="E",
                    help="also measure with each of these min_effect values for every op (min_effect_sweep.csv "
                         "and a table in detector_power.md)")
    args = ap.parse_args(argv)
    try:
        runs = check_runs(args.runs, across=bool(args.versus))
        versus = check_runs(args.versus, across=True) if args.versus else []
        if versus:
            check_machines(runs, versus)
        experiments(tuple(args.slowdowns))
        thresholds = load_thresholds(args.thresholds) if args.thresholds else ThresholdSet()
    except (DetectorInputError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    flags = {k: v for k, v in (("alpha", args.alpha), ("min_effect", args.min_effect)) if v is not None}
    thresholds = thresholds.overridden(**flags)
    source = args.thresholds or "compare's defaults"
    if flags:
        source += " with " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items())
    table = measure(runs, thresholds, tuple(args.slowdowns), args.mode, versus)
    summary, cases = summarize(table, len(pairs(len(runs), len(versus)))), per_case(table, [*runs, *versus])
    sweep = min_effect_sweep(runs, thresholds, tuple(args.slowdowns), args.sweep_min_effect, args.mode, versus)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "detector_power.csv", index=False)
    summary.to_csv(out / "detector_power_summary.csv", index=False)
    cases.to_csv(out / "detector_power_cases.csv", index=False)
    text = markdown(summary, cases, runs, thresholds, source, args.mode, versus)
    if not sweep.empty:
        sweep.to_csv(out / "min_effect_sweep.csv", index=False)
        text += ("\n## Other minimum effects (every op, the same pairs)\n\n"
                 "Share of judged comparisons: A/A false alarms, and each injected slowdown caught.\n\n"
                 + to_markdown(sweep) + "\n")
    (out / "detector_power.md").write_text(text)
    print(f"written: {out}/detector_power.md, detector_power.csv, detector_power_summary.csv, "
          f"detector_power_cases.csv" + (", min_effect_sweep.csv" if not sweep.empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
