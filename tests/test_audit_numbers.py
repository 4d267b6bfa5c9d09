"""Numbers an audit found reported as fine when they were not: a quantizer whose second-level
scales are wrong, a stack wrong past its first layer, a choice table lost for want of shape
names, a report's memory split and SNR check read off the wrong rows, and a compare gate held by
rows that have no time to judge."""

import dataclasses
import math

import pandas as pd
import pytest
import torch

from quantbench import kernels
from quantbench.harness.analysis.choice import choice_table
from quantbench.harness.analysis.compare import compare_runs
from quantbench.harness.analysis.loaded_run import LoadedRun
from quantbench.harness.config import load_config
from quantbench.harness.execution.sweep import run_sweep
from quantbench.harness.ops.inputs import make_weights
from quantbench.harness.ops.metrics import weight_error
from quantbench.harness.reporting.accuracy_plots import memory_table
from quantbench.harness.reporting.weight_draws import sample_weights
from quantbench.harness.results import COLUMNS, load_run
from quantbench.kernels.spec import QuantSpec


def sweep(tmp_path, name: str, sweep_yaml: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntiming: {{cpu_reps: 1}}\nweights: {{source: normal, std: 0.09}}\n"
                    f"sweep: {sweep_yaml}\n")
    df, _ = load_run(run_sweep(load_config(path), tmp_path / name, device="cpu", show_progress=False).path)
    return df


def test_a_quantizer_with_wrong_second_level_scales_is_an_error(tmp_path, swap_impl):
    """nf4_dq's chunk scales and mean decode every group's scale: codes and scale codes equal to
    the reference's with a wrong second level are a wrong weight (here 9 dB worse), not `ok`."""
    def wrong(inp):
        def run():
            q = kernels.quantize_ref(inp.w, inp.spec)
            return dataclasses.replace(q, second=dataclasses.replace(q.second, chunk_scales=2 * q.second.chunk_scales))
        return run
    swap_impl("quantize", "triton", wrong)
    df = sweep(tmp_path, "dq", "{op: quantize, impl: [torch, triton], bits: 4, scheme: nf4_dq, granularity: group, "
                               "group_size: 64, N: [16], K: [128]}")
    row = df[df["impl"] == "triton"].iloc[0]
    assert row["status"] == "error" and "second-level chunk_scales" in row["message"]


def test_a_quantizer_without_the_second_level_is_an_error():
    from quantbench.harness.ops.weight_ops import QuantizeOp, WeightInputs
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(0)).half()
    spec = QuantSpec(4, "nf4_dq", "group", 64)
    ref = kernels.quantize_ref(w, spec)
    inp = WeightInputs(w, spec)
    assert QuantizeOp().verify(ref, ref, inp) is None
    assert "second-level" in QuantizeOp().verify(dataclasses.replace(ref, second=None), ref, inp)
    moved = dataclasses.replace(ref.second, mean=ref.second.mean + 0.25)
    assert "second-level mean" in QuantizeOp().verify(dataclasses.replace(ref, second=moved), ref, inp)


def test_a_stack_wrong_past_depth_1_is_an_error(tmp_path, swap_impl):
    """Each depth is its own matmul on the implementation's own input: a layer 2 that is 1.5x off
    was `ok` when only depth 1 was checked; the reference's own chain still passes every depth."""
    def deep_wrong(inp):
        def run():
            outs, y = [], inp.x
            for depth, q in enumerate(inp.qs, start=1):
                y = kernels.qmatmul_ref(y, q) * (1.5 if depth == 2 else 1.0)
                outs.append(y)
            return outs
        return run
    swap_impl("stack", "triton", deep_wrong)
    df = sweep(tmp_path, "stack", "{op: stack, impl: [torch, triton], bits: 8, scheme: asymmetric, "
                                  "granularity: channel, M: 4, layers: 3, N: [64], K: [64]}")
    wrong = df[df["impl"] == "triton"]
    assert (wrong["status"] == "error").all() and wrong["message"].str.startswith("depth 2:").all()


def test_the_stack_check_passes_the_reference_chain_at_every_depth():
    from quantbench.harness.ops.matmul import StackInputs, StackOp
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 96, generator=gen).half()
    ws = [(torch.randn(96, 96, generator=gen) * 0.1).half() for _ in range(4)]
    qs = [kernels.quantize_ref(w, QuantSpec(4, "symmetric", "group", 32)) for w in ws]
    out = list(_chain(kernels.qmatmul_ref, x, qs))
    y_quant = list(_chain(lambda y, q: y @ kernels.dequantize_ref(q, torch.float32).double().t(), x.double(), qs))
    inp = StackInputs(x, ws, qs, y_quant, y_quant)
    assert StackOp().verify(out, out, inp) is None
    out[3] = out[3] * 1.01
    assert StackOp().verify(out, out, inp).startswith("depth 4:")


def _chain(layer, x, qs):
    for q in qs:
        x = layer(x, q)
        yield x


def _rows(**common):
    return lambda *rows: pd.DataFrame([{**dict.fromkeys(COLUMNS), **common, **r} for r in rows])


def test_the_fastest_by_m_table_of_a_run_without_shape_names():
    """A run of N and K axes has no shape names; the table was silently empty."""
    rows = _rows(op="matmul", status="ok", bits=4, scheme="asymmetric", granularity="group", group_size=128,
                 N=64, K=128, dtype="float16", M=1, bits_per_weight=4.25, out_rel_err=0.1)
    df = rows({"impl": "fp16", "role": "baseline", "ms": 1.0}, {"impl": "triton", "role": "candidate", "ms": 0.5},
              {"impl": "peer", "role": "peer", "ms": 0.4})
    table = choice_table(df, "matmul", 4)
    assert table[["shape", "fastest", "x dense"]].values.tolist() == [["64x128", "peer", 2.5]]


def test_the_report_memory_table_splits_one_weight_of_the_case_format():
    """Whatever row comes first (the dense baseline, a stack of 3 layers' bytes, W8A8's float32
    scales, nf4_dq's second level), each format's weight_bytes is one weight in its own format,
    split into parts that add up to it."""
    n, k, gs = 64, 256, 64
    nbytes = {s: QuantSpec(4, s, "group", gs).nbytes(n, k, torch.float16) for s in ("asymmetric", "nf4_dq")}
    rows = _rows(status="ok", N=n, K=k, dtype="float16", bits=4, granularity="group", group_size=gs, M=1)
    df = rows({"op": "matmul", "impl": "fp16", "role": "baseline", "scheme": "asymmetric", "weight_bytes": 2 * n * k},
              {"op": "matmul", "impl": "torch", "role": "reference", "scheme": "asymmetric",
               "weight_bytes": nbytes["asymmetric"]},
              {"op": "stack", "impl": "torch", "role": "reference", "scheme": "nf4_dq", "layers": 3, "depth": 3,
               "weight_bytes": 3 * nbytes["nf4_dq"]},
              {"op": "matmul_w8a8", "impl": "torch", "role": "reference", "bits": 8, "scheme": "symmetric",
               "granularity": "channel", "group_size": None, "weight_bytes": n * k + 4 * n})
    df["bits_per_weight"] = 8 * df["weight_bytes"] / (n * k)
    table = memory_table(df).set_index("format")
    assert table.loc["int4 asym g64", "weight_bytes"] == nbytes["asymmetric"]
    assert table.loc["nf4+dq g64", "weight_bytes"] == nbytes["nf4_dq"]
    assert table.loc["int8 sym channel (W8A8, float32 scales)", "weight_bytes"] == n * k + 4 * n
    parts = table["codes"] + table["scales"] + table["zeros"]
    assert (parts == table["weight_bytes"]).all(), table


def test_the_report_checks_its_redrawn_weights_against_the_format_rows_snr():
    """The dense baseline's row (SNR inf) first: the report read that and said the weights it drew
    again were not the measured ones."""
    n, k = 32, 64
    w = make_weights(_normal(), 0, n, k, "float16", "cpu")
    spec = QuantSpec(4, "asymmetric", "group", 32)
    snr = weight_error(w, kernels.dequantize_ref(kernels.quantize_ref(w, spec), torch.float32))["snr_db"]
    rows = _rows(op="matmul", status="ok", N=n, K=k, dtype="float16", bits=4, scheme="asymmetric",
                 granularity="group", group_size=32, M=1)
    df = rows({"impl": "fp16", "role": "baseline", "snr_db": math.inf}, {"impl": "torch", "role": "reference",
                                                                          "snr_db": snr})
    (fmt,) = sample_weights(df, {"config": {"seed": 0, "weights": {"source": "normal"}}}).formats
    assert fmt.run_snr_db == pytest.approx(snr) and fmt.snr_db == pytest.approx(snr)


def _normal():
    from quantbench.harness.config import NormalWeights
    return NormalWeights()


def test_untimed_stack_depths_do_not_hold_a_gate_on_unjudged_latency():
    """Depths before a stack's last are never timed: their verdict is their accuracy's, where the
    timed last depth's latency is judged on its samples."""
    rows = _rows(op="stack", impl="triton", role="candidate", status="ok", bits=8, scheme="asymmetric",
                 granularity="channel", dtype="float16", M=4, N=64, K=64, layers=2, timing_valid=True,
                 kernel_snr_db=60.0, kernel_rel_err=1e-3)
    df = rows({"depth": 1}, {"depth": 2, "ms": 1.0})
    key = "|".join(["stack", "triton", "8", "asymmetric", "channel", "", "float16", "4", "64", "64", "2", "2", ""])

    def run(samples, snr):
        d = df.copy()
        d.loc[0, "kernel_snr_db"] = snr
        return LoadedRun(path=None, df=d, meta={"env": {"gpu": "H200"}}, _samples={key: samples})
    same = compare_runs(run([1.0, 1.01, 0.99] * 5, 60.0), run([1.0, 1.01, 0.99] * 5, 60.0))
    assert same["verdict"].tolist() == ["same", "same"] and same["latency"].tolist() == ["untimed", "same"]
    worse = compare_runs(run([1.0, 1.01, 0.99] * 5, 60.0), run([1.0, 1.01, 0.99] * 5, 40.0))
    assert worse["verdict"].tolist() == ["regression", "same"]
