"""quantbench runs and pytest-benchmark JSON convert both ways without losing the timings."""

import json
from pathlib import Path

import pandas as pd
import pytest
from pytest_benchmark.stats import Stats

from quantbench.harness.analysis.tables import summary_markdown
from quantbench.harness.config import load_config
from quantbench.harness.results.pytest_benchmark import from_pytest_benchmark, to_pytest_benchmark
from quantbench.harness.results import COLUMNS, RunFolderError, load_run
from quantbench.harness.results.storage import read_meta
from quantbench.harness.execution.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]


def _quantize_run(tmp_path, reps: int):
    """A tiny CPU run of the int8 per-channel quantizer, `reps` samples per case."""
    path = tmp_path / "pb.yaml"
    path.write_text(f"name: pb\ntiming: {{cpu_reps: {reps}}}\nsweep: {{op: [quantize], bits: [8], "
                    "granularity: channel, N: [8], K: [64]}\n")
    return run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path


def test_round_trip(tmp_path):
    path = tmp_path / "pb.yaml"
    path.write_text("name: pb\ntiming: {cpu_reps: 4}\nsweep: {op: [quantize, matmul], bits: [8, 4], "
                    "granularity: channel, M: 2, N: [8], K: [64]}\n")
    run = run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path
    data = to_pytest_benchmark(run)
    assert len(data["benchmarks"]) == 8
    bench = data["benchmarks"][0]
    assert bench["fullname"].startswith("tests/benchmarks/test_kernels.py::test_kernel[quantize-triton-int8")
    assert set(Stats.fields) <= set(bench["stats"]) and len(bench["stats"]["data"]) == 4
    # grouped by op, as tests/benchmarks groups a real pytest-benchmark run (its benchmark.group)
    assert [b["group"] for b in data["benchmarks"]] == [b["extra_info"]["case"]["op"] for b in data["benchmarks"]]
    assert {b["group"] for b in data["benchmarks"]} == {"quantize", "matmul"}
    assert "benchmark.group = bench_group(case.as_dict())" in (ROOT / "tests/benchmarks/test_kernels.py").read_text()
    (tmp_path / "pb.json").write_text(json.dumps(data))
    back_path = from_pytest_benchmark(tmp_path / "pb.json", tmp_path / "back", summary_markdown)
    back, _ = load_run(back_path)
    orig, _ = load_run(run)
    cols = ["op", "impl", "bits", "M", "N", "K", "n_samples", "timing_valid"]
    pd.testing.assert_frame_equal(back[cols].reset_index(drop=True), orig[cols].reset_index(drop=True),
                                  check_dtype=False)
    for col in ("ms", "ms_p20", "ms_p80", "ms_min", "ms_std"):
        assert back[col].to_numpy() == pytest.approx(orig[col].to_numpy(), rel=1e-9)
    # lossless for every column quantbench owns (run_id names the new folder)
    ours = [c for c in COLUMNS if c != "run_id"]
    pd.testing.assert_frame_equal(back[ours].reset_index(drop=True), orig[ours].reset_index(drop=True),
                                  check_dtype=False)
    assert read_meta(back_path)["env"] == read_meta(run)["env"]  # torch, triton, GPU, commit...


def test_a_pytest_benchmark_run_without_our_rows_still_imports(tmp_path):
    """Entries as tests/benchmarks writes them (no extra_info.row): the case and the statistics."""
    run = _quantize_run(tmp_path, 3)
    data = to_pytest_benchmark(run)
    for bench in data["benchmarks"]:
        del bench["extra_info"]["row"]
    del data["machine_info"]["quantbench_env"]
    (tmp_path / "pb.json").write_text(json.dumps(data))
    back, meta = load_run(from_pytest_benchmark(tmp_path / "pb.json", tmp_path / "back", summary_markdown))
    orig, _ = load_run(run)
    assert back["ms"].to_numpy() == pytest.approx(orig["ms"].to_numpy(), rel=1e-9)
    assert back["gbps"].isna().all() and meta["env"]["gpu"] == read_meta(run)["env"]["gpu"]


def test_a_row_with_a_word_for_a_number_is_refused(tmp_path):
    data = to_pytest_benchmark(_quantize_run(tmp_path, 2))
    data["benchmarks"][0]["extra_info"]["row"]["gbps"] = "fast"
    (tmp_path / "pb.json").write_text(json.dumps(data))
    with pytest.raises(RunFolderError, match=r"benchmarks\[0\]\.extra_info\.row: column gbps holds 'fast'"):
        from_pytest_benchmark(tmp_path / "pb.json", tmp_path / "back", summary_markdown)


def test_pytest_benchmarks_own_compare_and_list_read_the_export(tmp_path):
    """`pytest-benchmark compare` and `list` on a converted run (they used to fail on the missing
    `iterations` of each entry's stats)."""
    import subprocess
    import sys
    from pathlib import Path

    import pytest_benchmark
    run = Path(__file__).resolve().parents[1] / "results" / "h200" / "quick-20261202T201422Z"
    data = to_pytest_benchmark(run)
    assert data["version"] == pytest_benchmark.__version__
    storage = tmp_path / ".benchmarks" / "Linux-CPython-3-64bit"
    storage.mkdir(parents=True)
    (storage / "0001_quick.json").write_text(json.dumps(data, default=str))
    compared = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(storage / "0001_quick.json")],
                              cwd=tmp_path, capture_output=True, text=True)
    assert compared.returncode == 0 and "Traceback" not in compared.stderr, compared.stderr
    assert compared.stdout.count("test_kernel[") == len(data["benchmarks"])
    listed = subprocess.run([sys.executable, "-m", "pytest_benchmark", "list"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert listed.returncode == 0 and "0001_quick.json" in listed.stdout, listed.stderr
