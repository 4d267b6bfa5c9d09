"""scripts/prove_timing.py runs on the CPU (--smoke, Triton's interpreter) and writes its files.
No time is asserted: on the CPU the timings mean nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_prove_timing_smoke_writes_its_files(tmp_path):
    out = tmp_path / "prove"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "prove_timing.py"), str(out), "--smoke",
                           "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(out / "prove_timing.csv")
    assert rows["kernel"].nunique() == 6 and set(rows["repeat"]) == {0, 1}
    harness = rows[rows["method"].str.startswith("harness_")]
    assert (harness["status"] == "ok").all() and not harness["timing_valid"].any()
    assert (harness["median_ms"] > 0).all()
    gpu_only = rows[rows["method"].isin(["triton_do_bench", "cuda_events", "cupti_kernels"])]
    assert len(gpu_only) == 6 * 2 * 3
    assert (gpu_only["status"] == "skipped").all() and gpu_only["message"].str.contains("CUDA GPU").all()
    summary = pd.read_csv(out / "prove_timing_summary.csv")
    assert len(summary) == 6 * 3 and (summary["repeats"] == 2).all()
    assert summary["within_3pct_of_do_bench"].isna().all()  # no target is judged on interpreter times
    md = (out / "prove_timing.md").read_text()
    assert "run_to_run_cv_pct" in md and "interpreter" in md and "## Not measured" in md
    meta = json.loads((out / "meta.json").read_text())
    assert meta["repeats"] == 2 and meta["smoke"] is True and meta["env"]["torch"] and meta["wall_s"] > 0


def test_prove_timing_refuses_too_few_repeats(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "prove_timing.py"), str(tmp_path / "x"),
                           "--repeats", "3", "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "at least 5 repeats" in done.stderr


def _prove_timing():
    import importlib.util
    spec = importlib.util.spec_from_file_location("prove_timing", ROOT / "scripts" / "prove_timing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("prove_timing", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_calls_from_trace_sums_each_calls_kernels_and_leaves_the_flushes_out():
    """Two calls, each after a 50 us flush: the first runs one 10 us kernel, the second a 12 us
    kernel and a 1 us fill of the flush's own name (a workspace zeroed inside the call)."""
    fill = "fill"
    trace = [(fill, 0, 50), ("gemv", 55, 65),
             (fill, 100, 150), (fill, 152, 153), ("gemv", 160, 172)]
    assert _prove_timing().calls_from_trace(list(reversed(trace)), fill, 2) == pytest.approx([0.010, 0.013])


def test_calls_from_trace_refuses_a_trace_short_of_flushes():
    with pytest.raises(ValueError, match="1 flushes"):
        _prove_timing().calls_from_trace([("fill", 0, 50), ("gemv", 55, 65)], "fill", 2)
