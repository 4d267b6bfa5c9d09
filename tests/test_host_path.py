"""What a planned call of each launcher does on the host (scripts/host_path.py): the PyTorch ops it
dispatches and the launches it makes, with Triton's launch stood in for. The issue's host target is
a launcher that costs no more CPU than F.linear; these pin the part of that which does not need a
GPU to see: a planned call allocates its outputs and launches, and runs no other PyTorch op (no
copy, no conversion, nothing that reads a value back and waits for the GPU). A change to a list
here is a change to what every call costs the host."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "host_path.py"

# launcher -> (launches, the ops of one planned call)
EXPECTED = {
    "qmatmul gemv (M = 1)": (1, ["new_empty"]),
    "qmatmul split-k gemm (M = 16)": (1, ["new_empty"]),
    "qmatmul gemm (M = 256, 8-bit)": (1, ["new_empty"]),
    "dequantize": (1, ["empty"]),
    # codes, then the scale+zero pairs as one buffer seen as scales and zeros (spec.scale_zero_pairs)
    "quantize per group": (1, ["empty", "empty", "as_strided", "as_strided"]),
    # codes, scales, zeros, then the min/max partial sums of the first pass
    "quantize per tensor": (3, ["empty", "empty", "empty_like", "empty", "empty_like"]),
    # the tokens' codes and scales, then the output
    "w8a8_matmul (M = 16)": (2, ["empty", "empty", "empty"]),
}
# ops that read a tensor's value on the host, which waits for the GPU
SYNCING = {"_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal"}


@pytest.fixture(scope="module")
def host_path():
    if os.environ.get("TRITON_INTERPRET") != "1":  # the CPU suite (conftest.py sets it)
        pytest.skip("stands the launches in for on CPU tensors (the direct launch runs in tests/gpu)")
    spec = importlib.util.spec_from_file_location("host_path", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def planned(host_path):
    """Each launcher's (launches, ops) of a planned call."""
    with host_path.planned_without_gpu() as launches:
        return {name: host_path.planned_call(call, launches)[::-1] for name, call in
                host_path.launcher_calls(n=64, k=256).items()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_planned_call_allocates_its_outputs_and_launches(planned, name):
    launches, ops = planned[name]
    assert (launches, ops) == EXPECTED[name]


def test_dequantize_then_cublas_makes_the_weight_then_one_matmul(planned):
    launches, ops = planned["qmatmul dequantize+cublas (M = 256)"]
    assert launches == 1 and ops[0] == "empty"
    assert set(ops[1:]) <= {"t", "mm", "addmm", "linear", "matmul"} and ops.count("mm") + ops.count("addmm") == 1


def test_no_planned_call_waits_for_the_gpu(planned):
    """nf4_dq's quantize takes the mean of its scales in PyTorch ops (kernels/NOTES.md): still none
    that reads a value back."""
    assert set(planned) == {*EXPECTED, "qmatmul dequantize+cublas (M = 256)", "quantize nf4_dq"}
    for name, (launches, ops) in planned.items():
        assert launches >= 1 and not SYNCING & set(ops), (name, ops)


def test_the_stand_ins_are_put_back(host_path):
    """After planned_without_gpu the launchers run under the interpreter again and give the
    reference's answer."""
    from quantbench import kernels
    from quantbench.kernels import QuantSpec, launching, quantize_ref
    from quantbench.kernels import quantized_matmul as qm
    with host_path.planned_without_gpu():
        assert not qm.INTERPRETED and not qm._gemv_launch.plans
    assert qm.INTERPRETED and launching.INTERPRETED and not qm._gemv_launch.plans
    q = quantize_ref(torch.randn(32, 64), QuantSpec(4, "asymmetric", "group", 32))
    x = torch.randn(1, 64)
    torch.testing.assert_close(kernels.qmatmul(x, q), kernels.qmatmul_ref(x, q), rtol=1e-4, atol=1e-4)


def test_the_script_prints_every_launcher_and_refuses_a_bad_count(host_path, capsys):
    assert host_path.main(["--calls", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPECTED) and "not a GPU host's host_us" in out
    assert host_path.main(["--calls", "0"]) == 2
    assert "--calls and --rounds must be at least 1" in capsys.readouterr().err
