"""Run against run: latency verdicts on raw samples, accuracy verdicts on the error columns."""

import json
import random
import subprocess
import sys

from quantbench.harness import ops
from quantbench.harness.compare import Thresholds, compare_runs, latency_verdict
from quantbench.harness.config import load_config
from quantbench.harness.runner import run_sweep

T = Thresholds()


def samples(median, spread, n=50, seed=0):
    rng = random.Random(seed)
    return [median * (1 + spread * rng.gauss(0, 1)) for _ in range(n)]


def test_identical_distributions_are_the_same():
    assert latency_verdict(samples(10, 0.02, seed=1), samples(10, 0.02, seed=2), T)[0] == "same"


def test_a_20_percent_slowdown_is_a_regression_and_a_speedup_an_improvement():
    assert latency_verdict(samples(10, 0.02), samples(12, 0.02, seed=3), T)[0] == "regression"
    assert latency_verdict(samples(10, 0.02), samples(8, 0.02, seed=3), T)[0] == "improvement"


def test_a_significant_but_small_change_is_noise_not_a_regression():
    verdict, p = latency_verdict(samples(10, 0.01, n=200), samples(10.3, 0.01, n=200, seed=4), T)
    assert p < T.alpha and verdict == "noisy"


def test_a_large_change_buried_in_noise_is_not_called():
    verdict, _ = latency_verdict(samples(10, 0.5, n=5), samples(12, 0.5, n=5, seed=5), T)
    assert verdict in ("same", "noisy")


CONFIG = """\
name: {name}
timing: {{cpu_reps: 2}}
sweep: {{op: dequantize, bits: {bits}, scheme: symmetric, granularity: channel, N: [8], K: [64]}}
"""


def run(tmp_path, name, bits):
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, bits=bits))
    return run_sweep(load_config(path), tmp_path / name, device="cpu", show_progress=False).path


def test_new_missing_and_an_accuracy_regression(tmp_path, monkeypatch):
    base = run(tmp_path, "base", "[8, 4]")
    from quantbench.kernels import dequantize
    monkeypatch.setitem(ops.OPS["dequantize"].impls, "triton", lambda inp: lambda: dequantize(inp.q) * 1.01)
    cand = run(tmp_path, "cand", "[4, 2]")
    table = compare_runs(base, cand).set_index(["bits", "impl"])["verdict"]
    assert table[8, "triton"] == "missing" and table[2, "torch"] == "new"
    assert table[4, "triton"] == "regression"  # ok before, now differs from its reference
    assert table[4, "torch"] == "same"  # interpreter timings are never judged
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", str(base), str(cand),
                          "--fail-on", "regression", "--out", str(tmp_path / "cmp")], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    verdict = json.loads((tmp_path / "cmp" / "verdict.json").read_text())
    assert verdict["counts"] == {"regression": 1, "improvement": 0, "same": 1, "noisy": 0, "new": 2, "missing": 2}
    assert "regression" in (tmp_path / "cmp" / "compare.md").read_text()


def test_gpu_table_puts_runs_side_by_side(tmp_path):
    from quantbench.harness.compare import gpu_table
    a, b = run(tmp_path, "a", "[8, 4]"), run(tmp_path, "b", "[4]")
    table = gpu_table([a, b])
    assert len(table) == 1 and table["bits"].tolist() == [4]  # only the cases both runs have
    speedups = [c for c in table.columns if c.endswith("triton vs torch")]
    assert len(speedups) == 2 and all(table[c].iloc[0] > 0 for c in speedups)
    assert len({c.split(": ")[0] for c in speedups}) == 2  # same GPU name: told apart by run id
