"""scripts/detector_power.py on synthetic run folders (written by the harness's own RunWriter, noise
from a seeded RNG): its counts are checked where they are known exactly."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantbench.harness.analysis.thresholds import ThresholdSet
from quantbench.harness.results import RunWriter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "detector_power.py"
_spec = importlib.util.spec_from_file_location("detector_power", SCRIPT)
dp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp)

# (op, N, K, median ms): one ~5 us kernel and two above 20 us, as in configs/aa.yaml
CASES = [("quantize", 4096, 4096, 0.020), ("dequantize", 1024, 1024, 0.005), ("matmul", 4096, 4096, 0.030)]
CONFIG = {"name": "aa", "seed": 0, "sweep": {"op": ["quantize", "dequantize", "matmul"]}}
GPU = {"gpu": "NVIDIA H100 80GB HBM3", "gpu_uuid": "GPU-0"}
DEFAULT_THRESHOLDS = ThresholdSet()  # what `quantbench compare` uses


def make_run(root, index, seed, cv, n=300, shift=1.0, invalid=(), config=CONFIG, env=GPU):
    """A run folder: each case's samples are median * shift * (1 + cv * N(0, 1)) from
    RNG(seed, case); the same seed gives the same samples in every run."""
    writer = RunWriter.create(root, f"aa{index}", {"config": config, "env": env})
    for c, (op, n_, k, median) in enumerate(CASES):
        rng = np.random.default_rng([seed, c])
        samples = median * shift * (1 + cv * rng.standard_normal(n))
        row = {"op": op, "impl": "triton", "bits": 4, "scheme": "asymmetric", "granularity": "group",
               "group_size": 128, "dtype": "float16", "M": 1 if op == "matmul" else None, "N": n_, "K": k,
               "status": "ok", "ms": float(np.median(samples)), "timing_valid": op not in invalid, "snr_db": 20.0}
        writer.append_case(f"{op}-{n_}", [row], [tuple(samples.tolist())])
    writer.finish(lambda df, meta: "")
    return writer.path


def summary_of(runs, slowdowns=(1.10, 1.05), thresholds=DEFAULT_THRESHOLDS):
    table = dp.measure(runs, thresholds, slowdowns)
    return table, dp.summarize(table, len(runs) * (len(runs) - 1)).set_index("experiment")


def test_identical_runs_raise_no_alarm_and_a_50_percent_slowdown_is_always_caught(tmp_path):
    runs = [make_run(tmp_path, i, seed=7, cv=0.02) for i in range(6)]
    _, s = summary_of(runs, slowdowns=(1.5,))
    pairs_x_cases = 6 * 5 * len(CASES)
    assert s.loc["aa", "judged"] == pairs_x_cases and s.loc["aa", "not_judged"] == 0
    assert s.loc["aa", ["regression", "improvement", "unstable"]].tolist() == [0, 0, 0]
    assert s.loc["aa", "same"] == pairs_x_cases and s.loc["aa", "rate"] == 0
    assert s.loc["slow50", "regression"] == pairs_x_cases and s.loc["slow50", "rate"] == 1.0
    assert s.loc["aa", "accuracy_regressions"] == 0


def test_independent_low_noise_runs(tmp_path):
    """1% noise, 300 samples: no A/A alarm; a 50% slowdown always caught; a 5% one is significant
    but under the 10% minimum effect, so it is `same`, never a regression."""
    runs = [make_run(tmp_path, i, seed=i, cv=0.01) for i in range(6)]
    table, s = summary_of(runs, slowdowns=(1.5, 1.05))
    n = 6 * 5 * len(CASES)
    assert s.loc["aa", "regression"] + s.loc["aa", "improvement"] == 0
    assert s.loc["slow50", "regression"] == n
    assert s.loc["slow5", "regression"] == 0 and s.loc["slow5", "same"] == n and s.loc["slow5", "rate"] == 0
    assert s.loc["slow5", "unstable_rate"] == 0.0
    slow5 = table[table["experiment"] == "slow5"]
    assert ((slow5["ratio"] > 1.03) & (slow5["ratio"] < 1.07)).all()  # the medians moved by the factor


def test_one_shifted_run_gives_exactly_its_pairs_as_false_alarms(tmp_path):
    """Five runs alike and a sixth 20% slower (a throttled GPU): every pair with the sixth as
    candidate is a regression, as base an improvement: 2 * 5 of 30 pairs, all cases."""
    runs = [make_run(tmp_path, i, seed=i, cv=0.01) for i in range(5)]
    runs.append(make_run(tmp_path, 5, seed=5, cv=0.01, shift=1.2))
    table, s = summary_of(runs)
    assert s.loc["aa", "regression"] == 5 * len(CASES) and s.loc["aa", "improvement"] == 5 * len(CASES)
    assert s.loc["aa", "rate"] == pytest.approx(10 / 30)
    aa = table[(table["experiment"] == "aa") & (table["latency"] == "regression")]
    assert set(aa["candidate"]) == {runs[5].name}
    cases = dp.per_case(table, runs).set_index("case")
    assert (cases["aa_false_alarms"] == 10).all() and (cases["aa_pairs"] == 30).all()
    assert cases["aa_max_change_pct"].between(15, 25).all()


def test_cases_without_valid_gpu_timing_are_not_judged(tmp_path):
    runs = [make_run(tmp_path, i, seed=i, cv=0.01, invalid=("dequantize",)) for i in range(6)]
    _, s = summary_of(runs, slowdowns=(1.5,))
    assert s.loc["aa", "judged"] == 30 * 2 and s.loc["aa", "not_judged"] == 30
    assert s.loc["slow50", "regression"] == 30 * 2


def test_script_writes_its_tables_and_names_thresholds_and_runs(tmp_path):
    runs = [make_run(tmp_path / "runs", i, seed=i, cv=0.02) for i in range(6)]
    out = tmp_path / "power"
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, runs), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("detector_power.csv", "detector_power_summary.csv", "detector_power_cases.csv"):
        assert (out / name).stat().st_size > 0
    md = (out / "detector_power.md").read_text()
    assert "alpha = 0.002" in md and "min_effect = 7%" in md and "NVIDIA H100 80GB HBM3" in md
    assert all(f"`{r}`" in md for r in runs)
    assert "slow10" in md and "slow5" in md


@pytest.mark.parametrize("change,message", [
    ("too_few", "need at least 6 run folders of one config, got 5"),
    ("twice", "the same run folder is given twice"),
    ("config", r"aa5-\S* was run with a different config than .*aa0-\S* \(differs in: seed\)"),
    ("gpu", r"aa5-\S* was recorded on 'GPU-1', .*aa0-\S* on 'GPU-0': A/A needs one GPU"),
    ("not_a_run", "no samples.jsonl"),
    ("speedup", "a slowdown factor must be above 1"),
])
def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys, change, message):
    runs = [make_run(tmp_path, i, seed=i, cv=0.02) for i in range(5)]
    extra = []
    if change == "twice":
        extra = [runs[0]]
    elif change == "config":
        extra = [make_run(tmp_path, 5, seed=5, cv=0.02, config={**CONFIG, "seed": 1})]
    elif change == "gpu":
        extra = [make_run(tmp_path, 5, seed=5, cv=0.02, env={**GPU, "gpu_uuid": "GPU-1"})]
    elif change == "not_a_run":
        (tmp_path / "empty").mkdir()
        extra = [tmp_path / "empty"]
    elif change == "speedup":
        extra = [make_run(tmp_path, 5, seed=5, cv=0.02)]
    args = [*map(str, runs + extra), "--out", str(tmp_path / "out")]
    if change == "speedup":
        args += ["--slowdowns", "0.9"]
    assert dp.main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_the_min_effect_sweep_trades_false_alarms_for_detections(tmp_path):
    runs = [make_run(tmp_path, i, seed=i, cv=0.01) for i in range(6)]
    sweep = dp.min_effect_sweep(runs, DEFAULT_THRESHOLDS, (1.10,), [0.05, 0.5]).set_index("min_effect")
    assert sweep.loc[0.05, "slow10 detection_rate"] > 0.9  # a 10% slowdown clears a 5% bar
    assert sweep.loc[0.5, "slow10 detection_rate"] == 0  # and never a 50% one
    assert sweep["aa false_alarm_rate"].max() <= 0.05


def make_machine_run(root, index, seed, machine_shift, uuid, cv=0.01, n=300):
    """A run with, per matmul workload, the candidate (triton) and its anchor (the fp16 baseline),
    every time scaled by `machine_shift` (a fresh machine a few percent slower or faster all over)."""
    writer = RunWriter.create(root, f"aa{uuid}-{index}", {"config": CONFIG, "env": {**GPU, "gpu_uuid": uuid}})
    for c, (n_, median) in enumerate([(4096, 0.030), (8192, 0.050)]):
        rows, samples = [], []
        for impl, role, share in (("triton", "candidate", 1.0), ("fp16", "baseline", 1.6)):
            rng = np.random.default_rng([seed, c, len(rows)])
            s = median * share * machine_shift * (1 + cv * rng.standard_normal(n))
            rows.append({"op": "matmul", "impl": impl, "role": role, "bits": 4, "scheme": "asymmetric",
                         "granularity": "group", "group_size": 128, "dtype": "float16", "M": 1, "N": n_, "K": n_,
                         "status": "ok", "ms": float(np.median(s)), "timing_valid": True, "snr_db": 20.0})
            samples.append(tuple(s.tolist()))
        writer.append_case(f"matmul-{n_}", rows, samples)
    writer.finish(lambda df, meta: "")
    return writer.path


def test_across_machines_the_relative_mode_ignores_a_machine_wide_shift(tmp_path):
    """Machine B runs everything 12% slower: the absolute gate calls every cross pair a change; the
    relative one (each kernel over its fp16 baseline in its own run) calls none, and still catches
    a 15% slowdown of the kernel alone. Only pairs across the machines are compared."""
    a = [make_machine_run(tmp_path, i, seed=i, machine_shift=1.0, uuid="GPU-A") for i in range(3)]
    b = [make_machine_run(tmp_path, i, seed=10 + i, machine_shift=1.12, uuid="GPU-B") for i in range(3)]
    assert len(dp.pairs(3, 3)) == 18 and all((i < 3) != (j < 3) for i, j in dp.pairs(3, 3))
    absolute = dp.summarize(dp.measure(a, DEFAULT_THRESHOLDS, (1.15,), "absolute", b), 18).set_index("experiment")
    relative_table = dp.measure(a, DEFAULT_THRESHOLDS, (1.15,), "relative", b)
    relative = dp.summarize(relative_table, 18).set_index("experiment")
    assert absolute.loc["aa", "rate"] == 1.0  # 4 cases x 18 pairs, every one a false alarm
    assert relative.loc["aa", "judged"] == 2 * 18 and relative.loc["aa", "rate"] == 0  # anchors unjudged
    assert relative.loc["slow15", "judged"] == 2 * 18 and relative.loc["slow15", "rate"] == 1.0
    slowed = relative_table[relative_table["experiment"] == "slow15"]
    assert set(slowed.loc[slowed["slowed"], "impl"]) == {"triton"}  # the anchors are never slowed
    assert slowed.loc[slowed["slowed"], "relative_ratio"].between(1.12, 1.18).all()


def test_the_script_takes_two_machines_and_refuses_two_gpu_models(tmp_path, capsys):
    a = [make_machine_run(tmp_path, i, seed=i, machine_shift=1.0, uuid="GPU-A") for i in range(3)]
    b = [make_machine_run(tmp_path, i, seed=10 + i, machine_shift=1.05, uuid="GPU-B") for i in range(3)]
    out = tmp_path / "power"
    assert dp.main([*map(str, a), "--versus", *map(str, b), "--mode", "relative", "--out", str(out)]) == 0
    md = (out / "detector_power.md").read_text()
    assert "3 runs on one machine and 3 on another, the 18 ordered pairs across the two" in md
    assert "Mode: `relative`" in md and all(f"`{r}`" in md for r in [*a, *b])
    for run in b:  # machine B now an H200
        meta = json.loads((run / "meta.json").read_text())
        meta["env"]["gpu"] = "NVIDIA H200"
        (run / "meta.json").write_text(json.dumps(meta))
    assert dp.main([*map(str, a), "--versus", *map(str, b), "--out", str(tmp_path / "x")]) == 2
    assert "A/A across machines needs one GPU model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
