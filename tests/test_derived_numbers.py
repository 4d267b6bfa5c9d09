"""The numbers users read, pinned to values worked out by hand.

Every table and view derives numbers from a row's median time, byte and FLOP counts and the run's
calibrated ceilings. This file fixes those numbers exactly, so that an inverted speedup, a rate
off by a power of ten, a halved share or a scaled error cannot pass:

- the runner's rate columns (gbps, tflops, intensity, pct_peak_bw, pct_peak_flops), through
  run_sweep with an op whose medians, bytes and FLOPs are known (no kernel runs, nothing timed);
- the speedups, GB/s, % of copy and TFLOP/s of the per-op table as summary.md and `quantbench
  show` print it, and the speedups of the report's heatmap table (speed_plots.speedup_table);
- the GPU-against-GPU view (gpus.csv) and the implementation view (impls.csv) that
  `quantbench compare` writes: speedups, % of copy, % of roofline;
- the calibrated copy bandwidth (read + write over the measured time) and matmul rate;
- output_error and output_difference, and how a product's error columns are made of them;
- `quantbench compare --fail-on regression`: exit status 0 when nothing regressed, 1 when a case
  did, through the real command line.

All arithmetic in the comments and literals is done by hand; none of it calls the code under test.
"""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from quantbench.harness.execution import calibration as calibrate_mod
from quantbench.harness.execution import case as case_mod
from quantbench.harness.execution import sweep as runner
from quantbench.harness.cli import main as cli_main
from quantbench.harness.config import RunConfig
from quantbench.harness.ops.metrics import output_difference, output_error
from quantbench.harness.ops import OPS, MatmulInputs, MatmulOp
from quantbench.harness.results import RunWriter, load_run
from quantbench.harness.execution.timing import Measurement

MiB = 1 << 20
REL = 1e-9  # every expected value below is exact up to float rounding

# ---------------------------------------------------------------------------------------------
# A sweep with known medians, bytes, FLOPs and ceilings
# ---------------------------------------------------------------------------------------------

# median ms of each (M, impl); N = K = 4096, every case moves 8 MiB
MEDIAN_MS = {(16, "triton"): 0.004, (16, "torch"): 0.010, (16, "fp16"): 0.005,
             (256, "triton"): 0.016, (256, "torch"): 0.012, (256, "fp16"): 0.024}
CALIBRATION = {"copy_gbps": 2500.0, "fp16_tflops": 800.0, "matmul_size": 8192}


class KnownMatmul(MatmulOp):
    """The matmul op (its axes, FLOPs = 2 M N K, fp16 ceiling, weight memory) with no kernels: its
    inputs are the case itself, each implementation (KNOWN_FACTORIES) returns its (M, impl), and
    every case moves exactly 8 MiB."""

    def prepare(self, case, source):
        return case

    def verify(self, out, ref, inp):
        return None

    def error(self, impl, out, inp):
        return {}

    def bytes_moved(self, case, weight_bytes):
        return 8 * MiB


KNOWN_FACTORIES = {impl: (lambda impl: lambda case: lambda: (case.M, impl))(impl) for impl in ("triton", "torch", "fp16")}


def _builtin(op, name):
    from quantbench.harness.registry import load_registry
    return load_registry(entry_points=False).get(op, name)


def _known_builtins():
    """The built-in records with the matmul triton, torch and fp16 factories of KnownMatmul (and no
    kernel path or launch configuration: they run no kernel)."""
    from quantbench.harness.registry import builtin
    return [dataclasses.replace(i, factory=KNOWN_FACTORIES[i.name], path=None, kernel_config=None)
            if i.op == "matmul" and i.name in KNOWN_FACTORIES else i for i in builtin.BUILTIN_IMPLS]


def _known_measure(fn, device, timing):
    m, impl = fn()
    ms = MEDIAN_MS[(m, impl)]
    return Measurement((ms * 0.99, ms, ms * 1.01), valid=True)  # median: ms


@pytest.fixture(scope="module")
def known_run(tmp_path_factory):
    """A run folder written by run_sweep: matmul int4 g128 fp16, M 16 and 256, N = K = 4096,
    implementations triton, torch, fp16, with the medians of MEDIAN_MS and the ceilings of
    CALIBRATION."""
    mp = pytest.MonkeyPatch()
    try:
        from quantbench.harness.registry import builtin
        mp.setattr(builtin, "BUILTIN_IMPLS", _known_builtins())
        mp.setitem(OPS, "matmul", KnownMatmul())
        mp.setattr(case_mod, "measure", _known_measure)
        mp.setattr(runner, "calibrate", lambda device: dict(CALIBRATION))
        cfg = RunConfig.model_validate({
            "name": "known", "device": "cpu",
            "sweep": {"op": ["matmul"], "impl": ["triton", "torch", "fp16"], "bits": [4],
                      "scheme": ["asymmetric"], "granularity": ["group"], "group_size": [128],
                      "M": [16, 256], "N": [4096], "K": [4096]}})
        writer = runner.run_sweep(cfg, tmp_path_factory.mktemp("known"), device="cpu", show_progress=False)
    finally:
        mp.undo()
    return writer.path


def _row(df, m, impl):
    rows = df[(df["M"] == m) & (df["impl"] == impl)]
    assert len(rows) == 1
    return rows.iloc[0]


# (M, impl): gbps, tflops, intensity, pct_peak_bw, pct_peak_flops, all by hand:
#   bytes 8 MiB = 8388608; FLOPs 2 * M * 4096 * 4096 = 536870912 at M = 16, 8589934592 at M = 256
#   M=16 triton: 8388608 B / 4e-6 s = 2.097152e12 B/s = 2097.152 GB/s; 536870912 / 4e-6 = 134.217728 TFLOP/s
#                intensity 536870912 / 8388608 = 64; 100 * 2097.152 / 2500 = 83.88608 %;
#                100 * 134.217728 / 800 = 16.777216 %
#   M=16 torch:  8388608 / 1e-5 = 838.8608 GB/s; 53.6870912 TFLOP/s; 33.554432 %; 6.7108864 %
#   M=16 fp16:   8388608 / 5e-6 = 1677.7216 GB/s; 107.3741824 TFLOP/s; 67.108864 %; 13.4217728 %
#   M=256 triton: 8388608 / 1.6e-5 = 524.288 GB/s; 8589934592 / 1.6e-5 = 536.870912 TFLOP/s;
#                intensity 1024; 20.97152 %; 67.108864 %
#   M=256 fp16:  8388608 / 2.4e-5 = 349.525333... GB/s; 357.913941333... TFLOP/s;
#                13.981013333... %; 44.739242666... %
RATES = {
    (16, "triton"): (2097.152, 134.217728, 64, 83.88608, 16.777216),
    (16, "torch"): (838.8608, 53.6870912, 64, 33.554432, 6.7108864),
    (16, "fp16"): (1677.7216, 107.3741824, 64, 67.108864, 13.4217728),
    (256, "triton"): (524.288, 536.870912, 1024, 20.97152, 67.108864),
    (256, "fp16"): (349.525333333333, 357.913941333333, 1024, 13.9810133333333, 44.7392426666667),
}


@pytest.mark.parametrize("m,impl", list(RATES))
def test_runner_rates_are_bytes_and_flops_over_the_median_time(known_run, m, impl):
    df, _ = load_run(known_run)
    row = _row(df, m, impl)
    gbps, tflops, intensity, pct_bw, pct_flops = RATES[(m, impl)]
    assert row["ms"] == pytest.approx(MEDIAN_MS[(m, impl)], rel=REL)
    assert row["gbps"] == pytest.approx(gbps, rel=REL)
    assert row["tflops"] == pytest.approx(tflops, rel=REL)
    assert row["intensity"] == pytest.approx(intensity, rel=REL)
    assert row["pct_peak_bw"] == pytest.approx(pct_bw, rel=REL)
    assert row["pct_peak_flops"] == pytest.approx(pct_flops, rel=REL)


def test_runner_records_the_calibration_it_divided_by(known_run):
    meta = json.loads((known_run / "meta.json").read_text())
    assert meta["calibration"]["copy_gbps"] == 2500.0 and meta["calibration"]["fp16_tflops"] == 800.0


# The per-op table (summary.op_table) for this run, by hand. Speedup = ms impl / ms triton:
#   M=16:  torch 0.010 / 0.004 = 2.5;  fp16 0.005 / 0.004 = 1.25
#   M=256: torch 0.012 / 0.016 = 0.75; fp16 0.024 / 0.016 = 1.5
# % of copy = 100 * GB/s triton / 2500: 83.88608 (M=16), 20.97152 (M=256)
OP_TABLE = {
    "M=16 4096x4096": {"ms triton": 0.004, "ms torch": 0.010, "ms fp16": 0.005,
                       "triton vs torch": 2.5, "triton vs fp16": 1.25, "GB/s triton": 2097.152,
                       "% of copy": 83.88608, "TFLOP/s triton": 134.217728, "bits/weight": 4.25},
    "M=256 4096x4096": {"ms triton": 0.016, "ms torch": 0.012, "ms fp16": 0.024,
                        "triton vs torch": 0.75, "triton vs fp16": 1.5, "GB/s triton": 524.288,
                        "% of copy": 20.97152, "TFLOP/s triton": 536.870912, "bits/weight": 4.25},
}
# the same as `quantbench show` and summary.md print them (4 significant digits)
OP_TABLE_PRINTED = {
    "M=16 4096x4096": {"ms triton": "0.004", "ms torch": "0.01", "ms fp16": "0.005",
                       "triton vs torch": "2.5", "triton vs fp16": "1.25", "GB/s triton": "2097",
                       "% of copy": "83.89", "TFLOP/s triton": "134.2", "bits/weight": "4.25"},
    "M=256 4096x4096": {"ms triton": "0.016", "ms torch": "0.012", "ms fp16": "0.024",
                        "triton vs torch": "0.75", "triton vs fp16": "1.5", "GB/s triton": "524.3",
                        "% of copy": "20.97", "TFLOP/s triton": "536.9", "bits/weight": "4.25"},
}


def _markdown_rows(text: str, first_header: str) -> dict[str, dict[str, str]]:
    """The rows of the markdown table whose header starts with `first_header`, keyed by their
    first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_summary_md_prints_the_speedups_rates_and_copy_share_by_hand(known_run):
    rows = _markdown_rows((known_run / "summary.md").read_text(), "shape")
    assert set(rows) == set(OP_TABLE_PRINTED)
    for shape, expected in OP_TABLE_PRINTED.items():
        assert {k: rows[shape][k] for k in expected} == expected, shape


def test_op_table_speedups_rates_and_copy_share_are_exact(known_run):
    from quantbench.harness.analysis.tables import op_table
    df, meta = load_run(known_run)
    table = op_table(df, "matmul", meta["calibration"]["copy_gbps"]).set_index("shape")
    for shape, expected in OP_TABLE.items():
        for col, value in expected.items():
            assert table.loc[shape, col] == pytest.approx(value, rel=REL), (shape, col)


def test_quantbench_show_prints_the_speedups_rates_and_copy_share_by_hand(known_run, capsys):
    assert cli_main(["show", str(known_run)]) == 0
    assert "device-to-device copy: 2500 GB/s" in capsys.readouterr().out
    # every column, as a script reads them: the same numbers as summary.md's table
    assert cli_main(["show", str(known_run), "--columns", "all", "--format", "markdown"]) == 0
    rows = _markdown_rows(capsys.readouterr().out, "shape")
    for shape, expected in OP_TABLE_PRINTED.items():
        assert {k: rows[shape][k] for k in expected} == expected, shape


def test_report_speedup_heatmap_table_is_peer_over_candidate(known_run):
    from quantbench.harness.reporting.speed_plots import speedup_table
    df, _ = load_run(known_run)
    speed = speedup_table(df, "matmul", "triton", "torch").set_index("column")["speedup"]
    assert speed[16.0] == pytest.approx(2.5, rel=REL)  # 0.010 / 0.004
    assert speed[256.0] == pytest.approx(0.75, rel=REL)  # 0.012 / 0.016
    speed = speedup_table(df, "matmul", "triton", "fp16").set_index("column")["speedup"]
    assert speed[16.0] == pytest.approx(1.25, rel=REL) and speed[256.0] == pytest.approx(1.5, rel=REL)


# ---------------------------------------------------------------------------------------------
# compare: GPU against GPU (gpus.csv) and implementation against implementation (impls.csv)
# ---------------------------------------------------------------------------------------------

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
CASE = {"op": "matmul", "bits": 4, "scheme": "asymmetric", "granularity": "group", "group_size": 128,
        "dtype": "float16", "M": 16, "N": 4096, "K": 4096, "status": "ok", "timing_valid": True,
        "snr_db": 20.0}


def _two_impl_run(root, name, gpu, copy_gbps, triton, torch_ms):
    """A run folder on `gpu` with one matmul case: triton's row (ms, gbps, pct_peak_bw,
    pct_peak_flops) and torch's ms."""
    writer = RunWriter.create(root, name, {"env": {"gpu": gpu}, "calibration": {"copy_gbps": copy_gbps}})
    ms, gbps, pct_bw, pct_flops = triton
    writer.append_case("triton", [{**CASE, "impl": "triton", "ms": ms, "gbps": gbps, "pct_peak_bw": pct_bw,
                                   "pct_peak_flops": pct_flops}], [()])
    writer.append_case("torch", [{**CASE, "impl": "torch", "ms": torch_ms, "gbps": 1.0, "pct_peak_bw": 99.0,
                                  "pct_peak_flops": 99.0}], [()])
    writer.finish(lambda df, meta: "")
    return writer.path


@pytest.fixture(scope="module")
def two_gpu_compare(tmp_path_factory):
    """`quantbench compare` of an H100 run against an A100 run, its output folder."""
    root = tmp_path_factory.mktemp("gpus")
    # H100: triton 0.020 ms, torch 0.050 ms; 1200 GB/s of 3000; roofline shares 30 (bw), 10 (flops)
    h100 = _two_impl_run(root, "h100", H100, 3000.0, (0.020, 1200.0, 30.0, 10.0), 0.050)
    # A100: triton 0.040 ms, torch 0.030 ms; 600 GB/s of 1500; roofline shares 45 (bw), 75 (flops)
    a100 = _two_impl_run(root, "a100", A100, 1500.0, (0.040, 600.0, 45.0, 75.0), 0.030)
    out = root / "compare"
    assert cli_main(["compare", str(h100), str(a100), "--out", str(out)]) == 0
    return out


def test_gpu_view_speedups_copy_share_and_roofline_are_exact(two_gpu_compare):
    gpus = pd.read_csv(two_gpu_compare / "gpus.csv")
    assert len(gpus) == 1
    row = gpus.iloc[0]
    assert row[f"{H100}: ms triton"] == pytest.approx(0.020, rel=REL)
    assert row[f"{H100}: triton vs torch"] == pytest.approx(2.5, rel=REL)  # 0.050 / 0.020
    assert row[f"{H100}: % of copy"] == pytest.approx(40.0, rel=REL)  # 100 * 1200 / 3000
    assert row[f"{H100}: % of roofline"] == pytest.approx(30.0, rel=REL)  # max(30, 10)
    assert row[f"{A100}: ms triton"] == pytest.approx(0.040, rel=REL)
    assert row[f"{A100}: triton vs torch"] == pytest.approx(0.75, rel=REL)  # 0.030 / 0.040
    assert row[f"{A100}: % of copy"] == pytest.approx(40.0, rel=REL)  # 100 * 600 / 1500
    assert row[f"{A100}: % of roofline"] == pytest.approx(75.0, rel=REL)  # max(45, 75)


def test_implementation_view_speedups_and_roofline_are_exact(two_gpu_compare):
    impls = pd.read_csv(two_gpu_compare / "impls.csv")
    assert len(impls) == 2
    h100, a100 = (impls[impls["run"].str.startswith(name)].iloc[0] for name in ("h100", "a100"))
    assert h100["triton vs torch"] == pytest.approx(2.5, rel=REL)
    assert a100["triton vs torch"] == pytest.approx(0.75, rel=REL)
    assert h100["% of roofline triton"] == pytest.approx(30.0, rel=REL)
    assert a100["% of roofline triton"] == pytest.approx(75.0, rel=REL)


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------

def test_copy_bandwidth_counts_read_and_write_of_one_gib(monkeypatch):
    """1 GiB copied in 1 ms: 2 * 1073741824 B / 1e-3 s = 2.147483648e12 B/s = 2147.483648 GB/s;
    in 0.8 ms, 2684.35456 GB/s."""
    monkeypatch.setattr(calibrate_mod, "_copy_ms", lambda device: 1.0)
    assert calibrate_mod.copy_bandwidth_gbps(torch.device("cpu")) == pytest.approx(2147.483648, rel=REL)
    monkeypatch.setattr(calibrate_mod, "_copy_ms", lambda device: 0.8)
    assert calibrate_mod.copy_bandwidth_gbps(torch.device("cpu")) == pytest.approx(2684.35456, rel=REL)


def test_matmul_rate_is_two_m_n_k_flops_over_the_fastest_sample(monkeypatch):
    """64^3 matmul in 1 us: 2 * 262144 = 524288 FLOPs / 1e-6 s = 0.524288 TFLOP/s; timed by its
    fastest sample (a ceiling), not its median."""
    modes = []
    monkeypatch.setattr(calibrate_mod, "_bench_ms", lambda fn, device, mode: modes.append(mode) or 0.001)
    rate = calibrate_mod.matmul_tflops(torch.device("cpu"), torch.float32, (64, 64, 64))
    assert rate == pytest.approx(0.524288, rel=REL) and modes == ["min"]


def test_the_matmul_ceiling_is_the_best_shape(monkeypatch):
    """32 x 64 x 64 in 0.5 us (0.524288 TFLOP/s) against 64^3 in 2 us (0.262144): the first wins
    and is named."""
    times = {32: 0.0005, 64: 0.002}
    monkeypatch.setattr(calibrate_mod, "_bench_ms", lambda fn, device, mode: times[fn().shape[0]])
    rate, shape = calibrate_mod.best_matmul_tflops(torch.device("cpu"), torch.float32, ((64, 64, 64), (32, 64, 64)))
    assert rate == pytest.approx(0.524288, rel=REL) and shape == (32, 64, 64)


# ---------------------------------------------------------------------------------------------
# output error
# ---------------------------------------------------------------------------------------------

def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_output_error_by_hand():
    # y = [3, 4] against [3, 0]: noise ||[0, 4]|| = 4, signal 3: rel 4/3, SNR 20 log10(3/4) dB
    rel, snr = output_error(_t(3.0, 4.0), _t(3.0, 0.0))
    assert rel == pytest.approx(4 / 3, rel=REL)
    assert snr == pytest.approx(-2.498774732165999, rel=REL)  # 20 * log10(0.75)
    # [3.3, 3.6] against [3, 4]: noise ||[0.3, -0.4]|| = 0.5, signal 5: rel 0.1, SNR 20 dB
    rel, snr = output_error(_t(3.3, 3.6), _t(3.0, 4.0))
    assert rel == pytest.approx(0.1, rel=REL) and snr == pytest.approx(20.0, rel=REL)
    # a float16 output is taken to float64 first: [3, 4.5] is exact, noise 0.5, signal 5
    rel, snr = output_error(torch.tensor([3.0, 4.5], dtype=torch.float16), _t(3.0, 4.0))
    assert rel == pytest.approx(0.1, rel=REL) and snr == pytest.approx(20.0, rel=REL)
    assert output_error(_t(3.0, 4.0), _t(3.0, 4.0)) == (0.0, math.inf)


def test_output_difference_by_hand():
    # [3.3, 3.6] against [3, 4]: |diff| = [0.3, 0.4]: mean 0.35, max 0.4,
    # relative 0.3 / 3 = 0.1 and 0.4 / 4 = 0.1: mean 10 %
    d = output_difference(_t(3.3, 3.6), _t(3.0, 4.0))
    assert d["out_mean_abs_diff"] == pytest.approx(0.35, rel=REL)
    assert d["out_max_abs_diff"] == pytest.approx(0.4, rel=REL)
    assert d["out_mean_rel_diff_pct"] == pytest.approx(10.0, rel=1e-7)  # the 1e-8 guard moves it by ~3e-9
    # [1, -2, 6] against [2, -4, 4]: |diff| = [1, 2, 2]: mean 5/3, max 2, relative [0.5, 0.5, 0.5]: 50 %
    d = output_difference(_t(1.0, -2.0, 6.0), _t(2.0, -4.0, 4.0))
    assert d["out_mean_abs_diff"] == pytest.approx(5 / 3, rel=REL)
    assert d["out_max_abs_diff"] == pytest.approx(2.0, rel=REL)
    assert d["out_mean_rel_diff_pct"] == pytest.approx(50.0, rel=1e-7)


def _matmul_inputs():
    # y_exact = [10, -20]; y_quant = 1.1 * y_exact = [11, -22] (the method's error: 10 %);
    # the kernel's output 1.01 * y_quant = [11.11, -22.22] (1 % off y_quant, 11.1 % off y_exact)
    return MatmulInputs(x=None, w=None, q=None, y_exact=_t(10.0, -20.0)[None], y_quant=_t(11.0, -22.0)[None],
                        weight_error={"snr_db": 30.0})


def test_a_products_error_columns_by_hand():
    e = MatmulOp().error(_builtin("matmul", "triton"), _t(11.11, -22.22)[None], _matmul_inputs())
    assert e["method_rel_err"] == pytest.approx(0.1, rel=REL)  # ||[1, -2]|| / ||[10, -20]||
    assert e["method_snr_db"] == pytest.approx(20.0, rel=REL)  # 20 log10(10)
    assert e["kernel_rel_err"] == pytest.approx(0.01, rel=1e-7)  # ||[0.11, -0.22]|| / ||[11, -22]||
    assert e["kernel_snr_db"] == pytest.approx(40.0, rel=1e-7)
    assert e["out_rel_err"] == pytest.approx(0.111, rel=1e-7)  # ||[1.11, -2.22]|| / ||[10, -20]||
    assert e["out_mean_abs_diff"] == pytest.approx(1.665, rel=1e-7)  # (1.11 + 2.22) / 2
    assert e["out_max_abs_diff"] == pytest.approx(2.22, rel=1e-7)
    assert e["out_mean_rel_diff_pct"] == pytest.approx(11.1, rel=1e-7)  # 1.11 / 10 = 2.22 / 20 = 11.1 %
    assert e["snr_db"] == 30.0  # the weight's error, passed through


def test_the_unquantized_baseline_has_no_method_error_and_is_judged_against_the_exact_output():
    e = MatmulOp().error(_builtin("matmul", "fp16"), _t(11.11, -22.22)[None], _matmul_inputs())
    assert e["method_rel_err"] == 0.0 and e["method_snr_db"] == math.inf
    assert e["kernel_rel_err"] == pytest.approx(0.111, rel=1e-7)
    assert e["kernel_snr_db"] == pytest.approx(20 * math.log10(1 / 0.111), rel=1e-7)


# ---------------------------------------------------------------------------------------------
# the CI gate: quantbench compare --fail-on regression
# ---------------------------------------------------------------------------------------------

def _gate_run(root, name, shift, seed=0):
    """One matmul triton case on an H100, 60 samples of 0.020 ms * shift * (1 + 1% noise)."""
    writer = RunWriter.create(root, name, {"env": {"gpu": H100}, "calibration": {"copy_gbps": 3000.0}})
    rng = np.random.default_rng(seed)
    samples = 0.020 * shift * (1 + 0.01 * rng.standard_normal(60))
    writer.append_case("case", [{**CASE, "impl": "triton", "ms": float(np.median(samples))}],
                       [tuple(samples.tolist())])
    writer.finish(lambda df, meta: "")
    return writer.path


def _compare_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "compare", *map(str, args),
                           "--fail-on", "regression"], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_fail_on_regression_exits_0_when_the_candidates_are_the_same_or_faster(tmp_path):
    base = _gate_run(tmp_path, "base", 1.0)
    same = _gate_run(tmp_path, "same", 1.0)  # the same seed: the same samples
    faster = _gate_run(tmp_path, "faster", 0.7, seed=1)
    done = _compare_cli(base, same, faster, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "regression: 0, improvement: 1, same: 1" in done.stdout
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["counts"]["regression"] == 0 and verdict["counts"]["improvement"] == 1


def test_fail_on_regression_exits_1_when_a_case_is_30_percent_slower(tmp_path):
    base = _gate_run(tmp_path, "base", 1.0)
    slower = _gate_run(tmp_path, "slower", 1.3, seed=1)
    done = _compare_cli(base, slower, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "regression: 1, improvement: 0, same: 0" in done.stdout
    assert "regression" in done.stdout.split("changed", 1)[1]  # the changed case is listed with its verdict
