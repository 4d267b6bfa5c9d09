"""Byte and FLOP counts of every op, bit width, scheme, granularity and group size, the ceiling each
op's FLOPs are read against, and the datasheet table. Expected values are written out here from
the format (spec.py), not taken from the code under test."""

import itertools
import math

import pytest

from quantbench.harness.execution.calibration import pct_peak_flops
from quantbench.harness.execution.cases import Case
from quantbench.harness.execution.datasheets import datasheet_for, datasheet_meta
from quantbench.harness.ops import OPS
from quantbench.harness.registry import load_registry

REGISTRY = load_registry(entry_points=False)  # the built-ins

ELEM = {"float32": 4, "float16": 2, "bfloat16": 2}
M, N = 3, 5
FORMATS = ([(bits, scheme, "tensor", None) for bits in (8, 4, 2) for scheme in ("asymmetric", "symmetric")]
           + [(bits, scheme, "channel", None) for bits in (8, 4, 2) for scheme in ("asymmetric", "symmetric")]
           + [(bits, scheme, "group", g) for bits in (8, 4, 2) for scheme in ("asymmetric", "symmetric")
              for g in (32, 64, 128, 256)])


def k_for(granularity):
    # odd K where nothing divides it (sub-byte codes round up to a whole byte per row); groups need K % 256 == 0
    return 768 if granularity == "group" else 771


def weight_bytes(bits, scheme, granularity, group, k, dtype, n=N):
    codes = n * math.ceil(k * bits / 8)
    params = {"tensor": 1, "channel": n, "group": n * k // (group or 1)}[granularity]
    per_param = ELEM[dtype] * (2 if scheme == "asymmetric" else 1)  # scale, and zero when asymmetric
    return codes + params * per_param


def impl_of(c):
    return REGISTRY.get(c.op, c.impl)


def moved(c):
    """The bytes a case moves, as the runner counts them: from the memory of the weight its
    implementation reads."""
    op = OPS[c.op]
    return op.bytes_moved(c, op.memory(c, impl_of(c))["weight_bytes"])


def case(op, impl, fmt, dtype, layers=None):
    bits, scheme, granularity, group = fmt
    return Case(op, impl, bits, scheme, granularity, group, dtype, None if op in ("quantize", "dequantize") else M,
                N, k_for(granularity), layers)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f[0]}b-{f[1][:4]}-{f[2]}{f[3] or ''}")
def test_every_format_op_moves_what_it_must(fmt, dtype):
    k, e = k_for(fmt[2]), ELEM[dtype]
    w = weight_bytes(*fmt, k, dtype)
    assert moved(case("quantize", "triton", fmt, dtype)) == N * k * e + w
    assert moved(case("dequantize", "triton", fmt, dtype)) == w + N * k * e
    assert OPS["quantize"].flops(case("quantize", "triton", fmt, dtype)) is None
    assert OPS["dequantize"].flops(case("dequantize", "torch", fmt, dtype)) is None
    for impl in ("triton", "torch", "torch_compile", "tinygemm"):
        c = case("matmul", impl, fmt, dtype)
        assert moved(c) == M * k * e + w + M * N * e
        assert OPS["matmul"].memory(c, impl_of(c))["weight_bytes"] == w
        assert OPS["matmul"].flops(c) == 2 * M * N * k
    fp16 = case("matmul", "fp16", fmt, dtype)  # the unquantized baseline reads W in its own dtype
    assert moved(fp16) == M * k * e + N * k * e + M * N * e


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f[2] != "group"] + [(4, "asymmetric", "group", 64)])
def test_stack_moves_every_layer_weight_and_activation(fmt):
    # square layers: N = K
    bits, scheme, granularity, group = fmt
    side, layers = 256, 5
    c = Case("stack", "triton", bits, scheme, granularity, group, "float16", M, side, side, layers)
    w = weight_bytes(bits, scheme, granularity, group, side, "float16", n=side)
    assert moved(c) == layers * w + layers * 2 * M * side * 2
    assert OPS["stack"].flops(c) == 2 * M * side * side * layers


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_w8a8_moves_int8_weights_and_float_activations(dtype):
    e, k = ELEM[dtype], 771
    c = Case("matmul_w8a8", "triton", 8, "symmetric", "channel", None, dtype, M, N, k, None)
    assert moved(c) == M * k * e + (N * k + 4 * N) + M * N * e
    assert OPS["matmul_w8a8"].flops(c) == 2 * M * N * k


def test_int4_g128_is_the_targets_floor():
    """TARGETS.md: an 8192^2 int4 weight with fp16 scale and zero per 128 is 35.7 MB, 4.25 bits."""
    c = Case("dequantize", "triton", 4, "asymmetric", "group", 128, "float16", None, 8192, 8192, None)
    mem = OPS["dequantize"].memory(c, impl_of(c))
    assert mem["weight_bytes"] == 8192 * 4096 + 8192 * 64 * 2 * 2 == 35_651_584
    assert mem["bits_per_weight"] == 4.25


@pytest.mark.parametrize("op, impl, dtype, ceiling", [
    ("matmul", "triton", "float16", "fp16_tflops"),
    ("matmul", "tinygemm", "bfloat16", "bf16_tflops"),
    ("matmul", "torch", "float32", "fp32_tflops"),
    ("stack", "fp16", "bfloat16", "bf16_tflops"),
    ("matmul_w8a8", "triton", "float16", "int8_tops"),
    ("matmul_w8a8", "int_mm", "bfloat16", "int8_tops"),
    ("matmul_w8a8", "torch", "float16", "int8_tops"),
    ("matmul_w8a8", "fp16", "bfloat16", "bf16_tflops"),
    ("quantize", "triton", "float16", None),
    ("dequantize", "triton", "float16", None),
])
def test_each_op_is_read_against_the_ceiling_of_its_arithmetic(op, impl, dtype, ceiling):
    c = Case(op, impl, 4, "asymmetric", "channel", None, dtype, M, N, 64, 2 if op == "stack" else None)
    assert OPS[op].flops_ceiling(c, impl_of(c)) == ceiling


def test_pct_peak_flops():
    cal = {"fp16_tflops": 800.0, "int8_tops": None}
    assert pct_peak_flops(400.0, "fp16_tflops", cal) == 50.0
    assert pct_peak_flops(400.0, "int8_tops", cal) is None  # not measured on this GPU
    assert pct_peak_flops(None, None, cal) is None and pct_peak_flops(400.0, "fp16_tflops", {}) is None


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB"),
    ("NVIDIA H100 PCIe", None),  # other memory and clocks than the SXM part
    ("NVIDIA H100 NVL", None),
    ("NVIDIA H200", "H200 SXM 141GB"),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", None),
    ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
    ("NVIDIA GeForce RTX 4090 D", None),
    ("cpu (Triton interpreter)", None),
])
def test_datasheet_matches_whole_names_only(name, model):
    sheet = datasheet_for(name)
    assert (sheet.model if sheet else None) == model


def test_datasheet_figures_are_dense_and_consistent():
    h100 = datasheet_meta("NVIDIA H100 80GB HBM3")
    assert h100["hbm_gbps"] == 3350 and h100["fp16_tflops"] == 989.5 and h100["int8_tops"] == 1979
    assert "pattern" not in h100 and h100["source"]
    for name in ("NVIDIA H200", "NVIDIA A100-SXM4-40GB", "NVIDIA L4", "NVIDIA GeForce RTX 4090"):
        sheet = datasheet_for(name)
        # int8 runs at twice the fp16 rate on every tensor core generation listed, except
        # GeForce Ada, whose fp16 rate with float32 accumulation is halved
        ratio = sheet.int8_tops / sheet.fp16_tflops
        assert ratio == pytest.approx(4 if "GeForce" in sheet.model else 2, rel=0.01)
        assert sheet.bf16_tflops == sheet.fp16_tflops and sheet.fp32_tflops < sheet.fp16_tflops


def test_every_case_of_every_op_has_a_byte_count():
    """No op or implementation is left without a count (a new op must add its formula)."""
    for op in OPS.values():
        for impl, fmt in itertools.product(REGISTRY.names(op.name), FORMATS[:2]):
            c = case(op.name, impl, fmt, "float16", layers=2)
            if op.name == "stack":
                c = Case("stack", impl, *fmt, "float16", M, 771, 771, 2)
            assert moved(c) > 0
