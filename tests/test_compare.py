"""Run against run: latency verdicts on raw samples, accuracy verdicts on the error columns."""

import json
import random
import subprocess
import sys

from quantbench.harness import ops
import pandas as pd

from quantbench.harness.analysis.compare import Thresholds, accuracy_verdict, compare_all, compare_runs, latency_verdict
from quantbench.harness.config import load_config
from quantbench.harness.execution.sweep import run_sweep

T = Thresholds()


def samples(median, spread, n=50, seed=0):
    rng = random.Random(seed)
    return [median * (1 + spread * rng.gauss(0, 1)) for _ in range(n)]


def test_identical_distributions_are_the_same():
    assert latency_verdict(samples(10, 0.02, seed=1), samples(10, 0.02, seed=2), T)[0] == "same"


def test_a_20_percent_slowdown_is_a_regression_and_a_speedup_an_improvement():
    assert latency_verdict(samples(10, 0.02), samples(12, 0.02, seed=3), T)[0] == "regression"
    assert latency_verdict(samples(10, 0.02), samples(8, 0.02, seed=3), T)[0] == "improvement"


def test_a_significant_but_small_change_is_the_same():
    """With many samples the U test calls a 3% shift significant; under min_effect it is `same`
    (as asv and nvbench say), not a change and not a separate word."""
    verdict, p = latency_verdict(samples(10, 0.01, n=200), samples(10.3, 0.01, n=200, seed=4), T)
    assert p < T.alpha and verdict == "same"


def test_a_large_change_buried_in_noise_is_unstable():
    """The median moved 20%, past min_effect, but five samples with 50% spread cannot confirm it."""
    verdict, p = latency_verdict(samples(10, 0.5, n=5), samples(12, 0.5, n=5, seed=5), T)
    assert p >= T.alpha and verdict == "unstable"


def test_one_sample_a_side_is_unjudged():
    assert latency_verdict([1.0], [1.0, 1.1], T)[0] == "unjudged"


CONFIG = """\
name: {name}
timing: {{cpu_reps: 2}}
sweep: {{op: dequantize, bits: {bits}, scheme: symmetric, granularity: channel, N: [8], K: [64]}}
"""


def run(tmp_path, name, bits):
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, bits=bits))
    return run_sweep(load_config(path), tmp_path / name, device="cpu", show_progress=False).path


def test_new_missing_and_an_accuracy_regression(tmp_path, swap_impl):
    base = run(tmp_path, "base", "[8, 4]")
    from quantbench.kernels import dequantize
    swap_impl("dequantize", "triton", lambda inp: lambda: dequantize(inp.q) * 1.01)
    cand = run(tmp_path, "cand", "[4, 2]")
    table = compare_runs(base, cand).set_index(["bits", "impl"])["verdict"]
    assert table[8, "triton"] == "missing" and table[2, "torch"] == "new"
    assert table[4, "triton"] == "regression"  # ok before, now differs from its reference
    assert table[4, "torch"] == "unjudged"  # interpreter timings are never judged, never "same"
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", str(base), str(cand),
                          "--fail-on", "regression", "--out", str(tmp_path / "cmp")], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    verdict = json.loads((tmp_path / "cmp" / "verdict.json").read_text())
    assert verdict["counts"] == {"regression": 1, "improvement": 0, "same": 0, "unstable": 0, "new": 2, "missing": 2,
                                 "unjudged": 1}
    # the gate's record names the runs, the thresholds and what it could not judge
    assert verdict["runs"]["baseline"]["path"] == str(base) and verdict["runs"]["candidates"][0]["path"] == str(cand)
    assert verdict["thresholds"]["default"]["min_effect"] == T.min_effect
    assert [(c["bits"], c["impl"]) for c in verdict["unjudged"]] == [(4, "torch")]
    assert "regression" in (tmp_path / "cmp" / "compare.md").read_text()


def test_gpu_table_puts_runs_side_by_side(tmp_path):
    from quantbench.harness.analysis.gpu_views import gpu_table
    a, b = run(tmp_path, "a", "[8, 4]"), run(tmp_path, "b", "[4]")
    table = gpu_table([a, b])
    assert len(table) == 1 and table["bits"].tolist() == [4]  # only the cases both runs have
    speedups = [c for c in table.columns if c.endswith("triton vs torch")]
    assert len(speedups) == 2 and all(table[c].iloc[0] > 0 for c in speedups)
    assert len({c.split(": ")[0] for c in speedups}) == 2  # same GPU name: told apart by run id


def row(**values):
    return pd.Series({"status": "ok", "message": None, "snr_db": 30.0, "kernel_snr_db": float("nan"),
                      "rel_err": 0.03, "kernel_rel_err": float("nan"), **values})


def test_an_error_that_rises_beyond_its_tolerance_is_an_accuracy_regression():
    t = Thresholds(error_rise=0.10, error_floor=1e-6)
    assert accuracy_verdict(row(), row(rel_err=0.0325), t)[0] == "same"  # +8%
    verdict, reason = accuracy_verdict(row(), row(rel_err=0.034), t)  # +13%
    assert verdict == "regression" and "rel_err 0.03 -> 0.034" in reason
    # relative rises of tiny errors are not regressions: the floor
    assert accuracy_verdict(row(kernel_rel_err=1e-9), row(kernel_rel_err=5e-9), t)[0] == "same"
    assert accuracy_verdict(row(kernel_rel_err=1e-4), row(kernel_rel_err=2e-4), t)[0] == "regression"
    # an exact result on both sides (inf SNR) is no drop; a finite SNR below it is
    assert accuracy_verdict(row(snr_db=float("inf")), row(snr_db=float("inf")), t)[0] == "same"
    assert accuracy_verdict(row(), row(snr_db=29.0), t)[1] == "snr_db 30.00 -> 29.00 dB"
    assert accuracy_verdict(row(), row(status="failed", message="NaN in output"), t)[0] == "regression"


def test_each_op_is_judged_by_its_own_thresholds():
    from quantbench.harness.analysis.thresholds import ThresholdSet
    loose = ThresholdSet(Thresholds(), {"matmul": Thresholds(min_effect=0.5)})
    base, slower = samples(10, 0.01, n=100), samples(12, 0.01, n=100, seed=9)
    assert latency_verdict(base, slower, loose.for_op("quantize"))[0] == "regression"
    assert latency_verdict(base, slower, loose.for_op("matmul"))[0] == "same"


def on_gpu(run_dir, gpu):
    """The run folder as if recorded on `gpu`, with GPU timings (the samples are the CPU ones)."""
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["env"]["gpu"] = gpu
    (run_dir / "meta.json").write_text(json.dumps(meta))
    df = pd.read_csv(run_dir / "results.csv")
    df["timing_valid"] = True
    df.to_csv(run_dir / "results.csv", index=False)
    return run_dir


def test_runs_on_two_gpus_get_a_gpu_table_that_lists_what_it_leaves_out(tmp_path):
    a = on_gpu(run(tmp_path, "a", "[8, 4]"), "GPU A")
    b = on_gpu(run(tmp_path, "b", "[4]"), "GPU B")
    views = compare_all([a, b])
    assert views.gpus["bits"].tolist() == [4]
    assert {"GPU A: % of roofline", "GPU B: triton vs torch"} <= set(views.gpus.columns)
    assert views.unshared["bits"].tolist() == [8] and views.unshared["only in"].tolist() == ["GPU A"]
    # latency across GPU models is never a verdict; accuracy still is
    judged = views.versus.dropna(subset=["latency_judged"])
    assert not judged["latency_judged"].any() and set(views.versus["verdict"]) == {"unjudged", "missing"}
    assert {r.split("-")[0] for r in views.impls["run"]} == {"a", "b"} and "triton vs torch" in views.impls


def test_compare_takes_several_candidates_and_a_thresholds_file(tmp_path):
    base, c1, c2 = (run(tmp_path, name, "[4]") for name in ("base", "c1", "c2"))
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("ops:\n  dequantize: {latency: {min_effect: 0.2}}\n")
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", str(base), str(c1), str(c2),
                          "--thresholds", str(thresholds), "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert sorted(c.split("-")[0] for c in table["candidate"].unique()) == ["c1", "c2"]
    assert (table["min_effect"] == 0.2).all()
    assert "## Implementation against implementation" in (tmp_path / "cmp" / "compare.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", str(base), str(c1),
                          "--min-effect", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--min-effect: expected a value in [0, 1), got 2.0" in bad.stderr


def test_the_implementation_table_puts_each_roofline_share_on_its_own_case(tmp_path):
    run_dir = run(tmp_path, "r", "[8, 4, 2]")
    df = pd.read_csv(run_dir / "results.csv")
    df["pct_peak_bw"] = df["bits"] * 10.0  # a share that names its case
    df.iloc[::-1].to_csv(run_dir / "results.csv", index=False)  # rows in another order than the cases
    from quantbench.harness.analysis.gpu_views import impl_table
    table = impl_table(run_dir)
    assert len(table) == 3
    for fmt, share in zip(table["format"], table["% of roofline triton"], strict=True):
        assert share == 10.0 * int(fmt.split()[0].removeprefix("int"))


def test_compare_gpus_names_a_run_without_candidate_rows(tmp_path):
    a = on_gpu(run(tmp_path, "a", "[4]"), "GPU A")
    path = tmp_path / "torch_only.yaml"
    path.write_text(CONFIG.format(name="b", bits="[4]").replace("sweep: {", "sweep: {impl: torch, "))
    b = on_gpu(run_sweep(load_config(path), tmp_path / "b", device="cpu", show_progress=False).path, "GPU B")
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare-gpus", str(a), str(b)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no timed rows of a candidate implementation to put beside the other GPUs" in out.stderr
    assert str(b) in out.stderr


def test_a_median_not_known_to_its_target_is_flagged_apart_from_the_verdict():
    """`unstable_timing` says the measurement itself was unstable (the row flag `noisy` on either
    side), whatever the verdict; a throttled clock alone is not that."""
    from quantbench.harness.analysis.compare import unstable_timing
    assert unstable_timing(pd.Series({"flags": "throttled;noisy"}), pd.Series({"flags": None}))
    assert unstable_timing(pd.Series({"flags": float("nan")}), pd.Series({"flags": "noisy"}))
    assert not unstable_timing(pd.Series({"flags": "throttled"}), pd.Series({"flags": float("nan")}))


def two_impl_run(root, name, triton_ms, fp16_ms, seed, n=200, cv=0.01, host=None):
    """A run folder with one matmul workload: the candidate (triton) and its anchor, the dense
    baseline (fp16), each n samples of median * (1 + cv * N(0, 1)); host: {impl: (host_us,
    host_linear_us)}, the rows' host time and F.linear's beside it."""
    import numpy as np
    from quantbench.harness.results import RunWriter
    writer = RunWriter.create(root, name, {"config": {"name": "rel", "seed": 0, "sweep": {"op": ["matmul"]}},
                                           "env": {"gpu": "NVIDIA H200"}})
    rows, samples = [], []
    for c, (impl, role, median) in enumerate((("triton", "candidate", triton_ms), ("fp16", "baseline", fp16_ms))):
        s = median * (1 + cv * np.random.default_rng([seed, c]).standard_normal(n))
        rows.append({"op": "matmul", "impl": impl, "role": role, "bits": 4, "scheme": "asymmetric",
                     "granularity": "group", "group_size": 128, "dtype": "float16", "M": 1, "N": 8192, "K": 8192,
                     "status": "ok", "ms": float(np.median(s)), "timing_valid": True, "snr_db": 20.0,
                     **dict(zip(("host_us", "host_linear_us"), (host or {}).get(impl, ())))})
        samples.append(tuple(s.tolist()))
    writer.append_case("matmul", rows, samples)
    writer.finish(lambda df, meta: "")
    return writer.path


def test_relative_mode_forgives_a_slower_machine_and_catches_a_slower_kernel(tmp_path):
    """A machine 8% slower everywhere is a regression as measured but nothing relative to cuBLAS
    in the same run; a kernel 10% slower than its cuBLAS neighbour is a regression either way.
    The anchor itself is unjudged in relative mode."""
    base = two_impl_run(tmp_path, "base", 0.030, 0.045, seed=1)
    slower_machine = two_impl_run(tmp_path, "machine", 0.030 * 1.08, 0.045 * 1.08, seed=2)
    slower_kernel = two_impl_run(tmp_path, "kernel", 0.030 * 1.10, 0.045, seed=3)

    def verdicts(cand, mode):
        return compare_runs(base, cand, T, mode).set_index("impl")["latency"].to_dict()

    assert verdicts(slower_machine, "absolute") == {"triton": "regression", "fp16": "regression"}
    assert verdicts(slower_machine, "relative") == {"triton": "same", "fp16": "unjudged"}
    assert verdicts(slower_kernel, "relative") == {"triton": "regression", "fp16": "unjudged"}
    table = compare_runs(base, slower_kernel, T, "relative").set_index("impl")
    assert 1.07 < table.loc["triton", "relative_ratio"] < 1.13
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", str(base), str(slower_machine),
                          "--mode", "relative", "--fail-on", "regression", "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((tmp_path / "cmp" / "verdict.json").read_text())["mode"] == "relative"


def test_host_time_is_compared_over_f_linears_and_never_judged(tmp_path):
    """A host twice as slow everywhere moves no host_ratio; a launcher 30% costlier against F.linear
    in its own run does, and compare.md lists it, with the latency verdict left to the samples.
    A run without host_linear_us (before schema 7) gives no ratio."""
    base = two_impl_run(tmp_path, "base", 0.030, 0.045, seed=1, host={"triton": (30.0, 20.0), "fp16": (21.0, 20.0)})
    slow_host = two_impl_run(tmp_path, "slowhost", 0.030, 0.045, seed=2,
                             host={"triton": (60.0, 40.0), "fp16": (42.0, 40.0)})
    costlier = two_impl_run(tmp_path, "costlier", 0.030, 0.045, seed=3,
                            host={"triton": (39.0, 20.0), "fp16": (21.0, 20.0)})
    older = two_impl_run(tmp_path, "older", 0.030, 0.045, seed=4, host={"triton": (30.0,), "fp16": (21.0,)})
    table = compare_runs(base, slow_host, T).set_index("impl")
    assert table["host_ratio"].tolist() == [1.0, 1.0]
    table = compare_runs(base, costlier, T).set_index("impl")
    assert abs(table.loc["triton", "host_ratio"] - 1.3) < 1e-9 and table.loc["triton", "latency"] == "same"
    assert table.loc["triton", "base_host_x_linear"] == 1.5 and table.loc["triton", "cand_host_x_linear"] == 1.95
    assert compare_runs(base, older, T)["host_ratio"].isna().all()
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", str(base), str(costlier),
                          str(slow_host), "--out", str(tmp_path / "cmp")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    md = (tmp_path / "cmp" / "compare.md").read_text()
    host_section = md.split("### Host time")[1].split("\n#")[0]
    rows = [line for line in host_section.splitlines() if line.startswith("|") and "triton" in line]
    assert len(rows) == 1 and "costlier" in rows[0] and "1.3" in rows[0], host_section
