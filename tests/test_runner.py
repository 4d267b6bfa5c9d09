"""The runner end to end on the CPU (Triton's interpreter): configs/quick.yaml to a results folder."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from quantbench.harness import ops
from quantbench.harness.config import load_config
from quantbench.harness.results import COLUMNS, SCHEMA_VERSION, load_run, read_samples
from quantbench.harness.execution.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    writer = run_sweep(load_config(ROOT / "configs" / "quick.yaml"), out, device="cpu", show_progress=False)
    return writer.path


def test_quick_config_writes_every_column_with_finite_values(quick_run):
    df = pd.read_csv(quick_run / "results.csv")
    assert list(df.columns) == COLUMNS
    cfg = load_config(ROOT / "configs" / "quick.yaml")
    sw = cfg.sweep
    granularity_points = len(sw.granularity) - 1 + len(sw.group_size)
    # quantize and dequantize (triton, torch) in every format; matmul (triton, torch, fp16) in one
    assert len(df) == 2 * 2 * len(sw.bits) * len(sw.scheme) * granularity_points + 3
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", "message"].tolist()
    numeric = ["ms", "ms_p20", "ms_p80", "ms_min", "ms_mean", "ms_std", "cv", "n_samples", "gbps",
               "weight_bytes", "bits_per_weight",
               "compression_vs_fp16", "compression_vs_fp32", "mse", "mae", "max_abs_err", "snr_db", "rel_err"]
    quantized = df["role"] != "baseline"  # unquantized cuBLAS has no error: its snr_db is inf
    assert df.loc[quantized, numeric].map(math.isfinite).all().all()
    products = df["op"] == "matmul"
    assert df.loc[~products, "tflops"].isna().all() and df.loc[products, "tflops"].gt(0).all()  # FLOPs: products only
    assert not df["timing_valid"].any()  # interpreter wall-clock times are never GPU timings
    assert (df["ms_min"] <= df["ms_p20"]).all()
    assert (df["ms_p20"] <= df["ms"]).all() and (df["ms"] <= df["ms_p80"]).all()
    assert set(df["gpu"]) == {"cpu (Triton interpreter)"} and set(df["schema_version"]) == {SCHEMA_VERSION}


def test_triton_and_reference_rows_agree_on_the_error(quick_run):
    df, _ = load_run(quick_run)
    key = ["op", "bits", "scheme", "granularity", "group_size"]
    wide = df.pivot_table(index=key, columns="impl", values="snr_db", dropna=False)
    assert (wide["triton"] - wide["torch"]).abs().max() < 1e-6
    # more bits, less error; per-group scales beat per-channel ones at the same bit width
    by_bits = df[df["impl"] == "torch"].groupby("bits")["snr_db"].mean()
    assert by_bits[8] > by_bits[4] > by_bits[2]


def test_meta_and_summary(quick_run):
    meta = json.loads((quick_run / "meta.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["config"]["name"] == "quick" and meta["env"]["torch"] and meta["env"]["python"]
    assert meta["status_counts"] == {"ok": meta["rows"]}
    summary = (quick_run / "summary.md").read_text()
    assert "## quantize" in summary and "## dequantize" in summary and "interpreter" in summary
    rows = (quick_run / "rows.jsonl").read_text().splitlines()
    assert len(rows) == meta["rows"]
    assert (quick_run / "samples.jsonl.gz").is_file() and not (quick_run / "samples.jsonl").exists()
    samples = read_samples(quick_run)
    df = pd.read_csv(quick_run / "results.csv")
    assert len(samples) == len(df)
    for rec, (_, row) in zip(samples, df.iterrows(), strict=True):
        assert (rec["op"], rec["impl"], rec["bits"]) == (row["op"], row["impl"], row["bits"])
        assert len(rec["samples_ms"]) == row["n_samples"]
        assert sorted(rec["samples_ms"])[0] == pytest.approx(row["ms_min"])


def test_show_prints_the_tables(quick_run):
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "show", str(quick_run)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "quantize" in out.stdout and "int4 asym g128" in out.stdout


def test_a_failing_case_is_recorded_and_the_sweep_goes_on(tmp_path, swap_impl):
    def broken(inputs):
        def run():
            raise RuntimeError("kernel exploded\nsecond line")
        return run

    swap_impl("dequantize", "triton", broken)
    cfg = load_config(ROOT / "configs" / "quick.yaml")
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"bits": [4], "scheme": ["symmetric"]})})
    df, meta = load_run(run_sweep(cfg, tmp_path, device="cpu", show_progress=False).path)
    bad = df[df["status"] != "ok"]
    assert set(bad["op"]) == {"dequantize"} and set(bad["impl"]) == {"triton"}
    assert set(bad["message"]) == {"RuntimeError: kernel exploded"}
    assert (df[df["op"] == "quantize"]["status"] == "ok").all()
    assert meta["status_counts"] == {"ok": len(df) - len(bad), "error": len(bad)}


def test_a_wrong_kernel_result_is_an_error(tmp_path, swap_impl):
    """The harness checks Triton's output against the reference on every case."""
    from quantbench.kernels import dequantize

    def off_by_one(inputs):
        return lambda: dequantize(inputs.q) + 1.0

    swap_impl("dequantize", "triton", off_by_one)
    cfg = load_config(ROOT / "configs" / "quick.yaml")
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"op": ["dequantize"], "impl": ["triton", "torch"],
                                                                      "bits": [8], "scheme": ["asymmetric"]})})
    df, _ = load_run(run_sweep(cfg, tmp_path, device="cpu", show_progress=False).path)
    triton = df[df["impl"] == "triton"]
    assert (triton["status"] == "error").all()
    assert triton["message"].str.contains("differ from the reference").all()


def test_matmul_rows_split_method_and_kernel_error(tmp_path):
    cfg_text = """\
name: mm
timing: {cpu_reps: 1}
sweep:
  op: matmul
  impl: [triton, torch, fp16, tinygemm]
  bits: [8, 4]
  granularity: [group]
  group_size: 32
  M: [1, 5]
  shapes: [{N: 24, K: 64}]
"""
    path = tmp_path / "mm.yaml"
    path.write_text(cfg_text)
    df, _ = load_run(run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path)
    assert set(df.loc[df["impl"] == "tinygemm", "status"]) == {"skipped"}
    ok = df[df["status"] == "ok"]
    assert len(ok) == 2 * 2 * 3
    fp16, quant = ok[ok["impl"] == "fp16"], ok[ok["impl"] != "fp16"]
    assert (fp16["method_rel_err"] == 0).all() and (fp16["bits_per_weight"] == 16).all()
    # the method's error does not depend on the implementation; 4 bits lose more than 8
    per_case = quant.groupby(["bits", "M"])["method_rel_err"]
    assert (per_case.max() - per_case.min()).max() < 1e-12
    assert quant[quant["bits"] == 4]["method_rel_err"].min() > quant[quant["bits"] == 8]["method_rel_err"].max()
    # the kernel's own error is float rounding, far below the method's
    assert (quant["kernel_rel_err"] < quant["method_rel_err"] / 10).all()
    assert (ok["tflops"] > 0).all() and ok[["out_mean_abs_diff", "out_mean_rel_diff_pct"]].notna().all().all()
    # FLOPs over bytes: 2 M N K / (x + weight + y bytes), float16 by default
    row = ok[(ok["impl"] == "fp16") & (ok["M"] == 5)].iloc[0]
    assert row["intensity"] == pytest.approx(2 * 5 * 24 * 64 / (2 * (5 * 64 + 24 * 64 + 5 * 24)))  # fp16
    assert ok["pct_peak_bw"].isna().all()  # no copy bandwidth is measured on the CPU


def test_stack_rows_per_depth_and_depth_one_is_the_matmul(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("""\
name: st
dtype: float32
weights: {source: normal, std: 0.125}
timing: {cpu_reps: 1}
sweep:
  op: [matmul, stack]
  impl: [triton, torch, fp16]
  bits: 4
  granularity: channel
  M: 3
  layers: 4
  shapes: [{N: 64, K: 64}]
""")
    df, _ = load_run(run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path)
    assert (df["status"] == "ok").all(), df["message"].tolist()
    stack = df[df["op"] == "stack"]
    assert sorted(stack[stack["impl"] == "triton"]["depth"]) == [1, 2, 3, 4]
    # the whole stack's time sits on its last depth only
    for _, rows in stack.groupby("impl"):
        assert rows.sort_values("depth")["ms"].notna().tolist() == [False, False, False, True]
    cols = ["method_rel_err", "kernel_rel_err", "out_rel_err", "out_mean_abs_diff"]
    for impl in ("triton", "torch", "fp16"):
        first = stack[(stack["impl"] == impl) & (stack["depth"] == 1)][cols].to_numpy()
        single = df[(df["op"] == "matmul") & (df["impl"] == impl)][cols].to_numpy()
        assert (first == single).all(), impl
    quant = stack[stack["impl"] == "torch"].set_index("depth")["method_rel_err"]
    assert quant[4] > quant[1]  # the method's error compounds with depth


def test_torch_compile_rows_record_compile_time_apart(tmp_path):
    path = tmp_path / "tc.yaml"
    path.write_text("""\
name: tc
dtype: float32
timing: {cpu_reps: 2}
sweep: {op: matmul, impl: [torch, torch_compile], bits: 8, granularity: channel, M: 2, N: [16], K: [32]}
""")
    df, _ = load_run(run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path)
    assert (df["status"] == "ok").all(), df["message"].tolist()
    compiled = df.set_index("impl").loc["torch_compile"]
    assert compiled["first_call_ms"] > 10 * compiled["ms"]  # compilation is in the first call, not the samples
    assert df["method_rel_err"].nunique() == 1


def test_w8a8_rows(tmp_path):
    path = tmp_path / "w8a8.yaml"
    path.write_text("""\
name: w8a8
timing: {cpu_reps: 1}
sweep: {op: matmul_w8a8, impl: [triton, torch, fp16, int_mm], bits: [8, 4], M: [3, 20], N: [24], K: [64]}
""")
    df, _ = load_run(run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path)
    assert len(df) == 2 * 4  # the bits axis does not apply: W8A8 is one format
    assert set(df.loc[df["impl"] == "int_mm", "status"]) == {"skipped"}
    ok = df[df["status"] == "ok"]
    assert len(ok) == 6 and (ok["bits"] == 8).all() and (ok["scheme"] == "symmetric").all()
    quant = ok[ok["impl"] != "fp16"]
    assert (quant["kernel_rel_err"] < quant["method_rel_err"] / 10).all()


def test_out_of_memory_and_timeout_are_recorded_and_the_sweep_goes_on(tmp_path, swap_impl):
    import time

    import torch

    def out_of_memory(inputs):
        def run():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return run

    def slow(inputs):
        def run():
            time.sleep(5)
        return run

    swap_impl("quantize", "triton", out_of_memory)
    swap_impl("dequantize", "triton", slow)
    path = tmp_path / "faults.yaml"
    path.write_text("""\
name: faults
timing: {cpu_reps: 1, case_timeout_s: 0.5}
sweep: {op: [quantize, dequantize], bits: [8, 4], granularity: channel, N: [8], K: [64]}
""")
    df, meta = load_run(run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path)
    status = df.groupby(["op", "impl"])["status"].agg(set)
    assert status["quantize", "triton"] == {"oom"} and status["dequantize", "triton"] == {"timeout"}
    assert status["quantize", "torch"] == status["dequantize", "torch"] == {"ok"}
    assert meta["status_counts"] == {"oom": 2, "timeout": 2, "ok": 4}
    assert df.loc[df["status"] == "timeout", "message"].str.contains("per-case limit of 0.5 s").all()
    assert df.loc[df["status"] == "oom", "message"].str.startswith("OutOfMemoryError: CUDA out of memory").all()


def test_environment_takes_the_commit_the_caller_names(monkeypatch):
    """A tree copied to a GPU machine may carry a stale .git: QUANTBENCH_GIT_COMMIT wins over it."""
    import torch
    from quantbench.harness.execution.environment import collect_env
    monkeypatch.setenv("QUANTBENCH_GIT_COMMIT", "0123456789abcdef")
    monkeypatch.delenv("QUANTBENCH_GIT_DIRTY", raising=False)
    env = collect_env(torch.device("cpu"))
    assert env["git_commit"] == "0123456789abcdef" and not env["git_dirty"]
