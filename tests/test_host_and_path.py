"""The kernel-variant column (`path`) and the host-time column (`host_us`): recorded by the runner,
shown in the tables. The host time itself is measured on a GPU only (tests/gpu)."""

import pandas as pd
import pytest
import torch

from quantbench import kernels
from quantbench.harness.analysis.tables import op_table
from quantbench.harness.config import RunConfig
from quantbench.harness.execution.sweep import run_sweep
from quantbench.harness.execution.host_time import alternating_batch_medians, host_columns, host_time
from quantbench.harness.results import COLUMNS


@pytest.fixture(scope="module")
def matmul_run(tmp_path_factory):
    """M = 1, 16, 96 and 128 on one small int4 g32 weight, float16: each of qmatmul's four paths."""
    cfg = RunConfig.model_validate({
        "name": "paths", "device": "cpu", "timing": {"cpu_reps": 1},
        "sweep": {"op": ["matmul"], "impl": ["triton", "torch", "fp16"], "bits": [4], "scheme": ["asymmetric"],
                  "granularity": ["group"], "group_size": [32], "M": [1, 16, 96, 128], "N": [32], "K": [64], "dtype": ["float16"]}})
    writer = run_sweep(cfg, tmp_path_factory.mktemp("paths"), device="cpu", show_progress=False)
    return pd.read_csv(writer.path / "results.csv")


def test_the_candidate_rows_say_which_kernel_ran(matmul_run):
    assert (matmul_run["status"] == "ok").all(), matmul_run["message"].tolist()
    triton = matmul_run[matmul_run["impl"] == "triton"].set_index("M")["path"].to_dict()
    assert triton == {1: "gemv", 16: "split-k gemm", 96: "gemm", 128: "dequantize+cublas"}
    assert triton == {m: kernels.qmatmul_path(m, torch.float16, 4) for m in (1, 16, 96, 128)}  # the launcher's own choice
    assert kernels.qmatmul_path(128, torch.float32, 4) == "gemm"  # float32 never goes through cuBLAS (TF32)
    assert kernels.qmatmul_path(128, torch.float16, 8) == "gemm"  # 8-bit codes: the fused GEMM up to M = 1023
    assert matmul_run.loc[matmul_run["impl"] != "triton", "path"].isna().all()  # no variants to name


def test_the_candidate_rows_say_how_their_kernel_was_launched(matmul_run):
    """kernel_config: under the interpreter the fixed tiles (on the GPU the autotuner's choice,
    tests/gpu/test_kernel_paths.py), and the dequantize plan's tile before cuBLAS; no copy of the
    scales named: the weight's are quantize's scale+zero pairs, which the fused paths read as they are."""
    configs = matmul_run[matmul_run["impl"] == "triton"].set_index("M")["kernel_config"].to_dict()
    assert configs == {1: "BLOCK_N=16 BLOCK_K=64 SPLIT_K=2 STAGES=1 (interpreter)",
                       16: "BLOCK_M=16 BLOCK_N=32 BLOCK_K=32 GROUP_M=4 SPLIT_K=2 (interpreter)",
                       96: "BLOCK_M=16 BLOCK_N=32 BLOCK_K=32 GROUP_M=4 SPLIT_K=1 (interpreter)",
                       128: "dequantize BLOCK_N=64 BLOCK_K=64 num_warps=4, then cuBLAS"}
    assert matmul_run.loc[matmul_run["impl"] != "triton", "kernel_config"].isna().all()


def test_the_tables_show_the_path_and_no_host_time_on_the_cpu(matmul_run):
    table = op_table(matmul_run, "matmul")
    assert table["path"].tolist() == ["gemv", "split-k gemm", "gemm", "dequantize+cublas"]
    # beside it the tile, so a jump between two M values of one path is explained too
    assert table["kernel config"].tolist() == matmul_run.loc[matmul_run["impl"] == "triton", "kernel_config"].tolist()
    assert not any(c.startswith("host us") for c in table.columns)  # the interpreter's time is not a launcher's
    assert matmul_run["host_us"].isna().all()


def test_the_tables_show_each_implementations_host_time():
    rows = []
    for impl, role, ms, host in (("triton", "candidate", 0.05, 113.0), ("fp16", "baseline", 0.1, 22.0)):
        rows.append({"op": "matmul", "impl": impl, "role": role, "status": "ok", "bits": 4, "scheme": "asymmetric",
                     "granularity": "group", "group_size": 128, "dtype": "float16", "M": 1, "N": 8192, "K": 8192,
                     "ms": ms, "host_us": host, "gbps": 700.0, "tflops": 1.0, "path": "gemv" if impl == "triton" else None,
                     "bits_per_weight": 4.25, "method_snr_db": 20.0, "kernel_snr_db": 60.0})
    table = op_table(pd.DataFrame(rows).reindex(columns=COLUMNS), "matmul")
    assert table.loc[0, "host us triton"] == 113.0 and table.loc[0, "host us fp16"] == 22.0
    assert table.loc[0, "triton vs fp16"] == pytest.approx(2.0)


def test_host_time_is_not_measured_on_the_cpu():
    assert host_time(lambda: None, torch.device("cpu")) is None
    assert host_columns(lambda: None, torch.device("cpu")) == {"host_us": None, "host_linear_us": None}


def test_host_batches_alternate_and_each_call_gets_its_own_median():
    """Two calls timed in alternating batches on a clock the calls themselves advance: each call's
    median is its own cost per call, though the host runs 3x slower through one round; the order
    flips every round, and the spin before and the synchronize after bracket every round."""
    now, speed, events = [0.0], [1.0], []
    slow_round = iter([False, True, False, False, False, False])

    def costing(name, seconds):
        def call():
            events.append(name)
            now[0] += seconds * speed[0]
        return call

    def spin():
        events.append("spin")
        speed[0] = 3.0 if next(slow_round) else 1.0

    medians = alternating_batch_medians([costing("fn", 2e-6), costing("anchor", 1e-6)], rounds=6, batch=3,
                                        before=spin, after=lambda: events.append("sync"), clock=lambda: now[0])
    assert medians == pytest.approx([2e-6, 1e-6])
    rounds = [r.split() for r in " ".join(events).split("sync")[:-1]]
    assert len(rounds) == 6 and all(r[0] == "spin" for r in rounds)
    assert [r[1] for r in rounds] == ["fn", "anchor"] * 3  # after each spin, the other call first
    assert all(r.count("fn") == r.count("anchor") == 3 for r in rounds)


def test_the_tables_show_the_candidates_host_time_over_f_linears():
    """host x F.linear: the candidate's host_us over host_linear_us of its own row, measured in the
    same moments; runs before schema 7 (no host_linear_us) show no such column."""
    rows = []
    for impl, role, host, linear in (("triton", "candidate", 30.0, 20.0), ("fp16", "baseline", 22.0, 21.0)):
        rows.append({"op": "matmul", "impl": impl, "role": role, "status": "ok", "bits": 4, "scheme": "asymmetric",
                     "granularity": "group", "group_size": 128, "dtype": "float16", "M": 1, "N": 8192, "K": 8192,
                     "ms": 0.02, "host_us": host, "host_linear_us": linear, "gbps": 700.0, "tflops": 1.0,
                     "bits_per_weight": 4.25, "method_snr_db": 20.0, "kernel_snr_db": 60.0})
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table = op_table(df, "matmul")
    assert table.loc[0, "host x F.linear"] == pytest.approx(1.5)
    assert "host x F.linear" not in op_table(df.assign(host_linear_us=None), "matmul")


def test_quantize_rows_name_the_tiling_they_ran(tmp_path):
    """A quantize row's kernel_config is quantize_choice: the kernel's MODE and tile, which quantize
    plans from the format and the weight's shape (the same on the GPU), with the passes per tensor and for nf4_dq."""
    cfg = RunConfig.model_validate({
        "name": "tiling", "device": "cpu", "timing": {"cpu_reps": 1},
        "sweep": {"op": ["quantize"], "impl": ["triton", "torch"], "bits": [4], "scheme": ["asymmetric", "nf4_dq"],
                  "granularity": ["tensor", "channel", "group"], "group_size": [32], "N": [32], "K": [64],
                  "dtype": ["float16"]}})
    rows = pd.read_csv(run_sweep(cfg, tmp_path, device="cpu", show_progress=False).path / "results.csv")
    assert (rows["status"] == "ok").all(), rows["message"].tolist()
    triton = rows[rows["impl"] == "triton"].set_index(["scheme", "granularity"])["kernel_config"].to_dict()
    assert triton == {
        ("asymmetric", "tensor"): "min/max pass, then MODE=0 BLOCK_N=64 BLOCK_K=64 GROUP=64 CHUNK=64 num_warps=4",
        ("asymmetric", "channel"): "MODE=2 BLOCK_N=64 BLOCK_K=64 GROUP=64 CHUNK=64 num_warps=4",
        ("asymmetric", "group"): "MODE=2 BLOCK_N=32 BLOCK_K=64 GROUP=32 CHUNK=16 num_warps=2",
        ("nf4_dq", "group"): "MODE=2 (scales), then MODE=3 (codes) BLOCK_N=16 BLOCK_K=64 GROUP=32 CHUNK=16 num_warps=1"}
    group32 = kernels.QuantSpec(4, "asymmetric", "group", 32)
    assert triton[("asymmetric", "group")] == kernels.quantize_choice(group32, 32, 64)
    assert rows.loc[rows["impl"] != "triton", "kernel_config"].isna().all()


@pytest.mark.parametrize("name", ["qmatmul", "quantize", "dequantize", "w8a8_matmul"])
def test_a_kernel_entry_point_is_resolved_once(name):
    """The kernel modules load on first use (the package's __getattr__), and what loaded is kept in
    the package's namespace: the timed calls (`kernels.qmatmul(x, q)` in the registry) find it as a
    plain attribute, where each went through import_module before (~1.5 us of host time a call)."""
    first = getattr(kernels, name)
    assert vars(kernels)[name] is first and getattr(kernels, name) is first
