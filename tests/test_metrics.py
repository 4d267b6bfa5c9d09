"""Byte accounting and error metrics, checked against numbers worked out by hand."""

import math

import pytest
import torch

from quantbench.harness.ops.metrics import weight_error, weight_memory
from quantbench.kernels import QuantSpec


@pytest.mark.parametrize("spec,dtype,expected_bytes", [
    # int4, one fp16 scale and one fp16 zero per 128 weights: 0.5 + 4 / 128 bytes a weight
    (QuantSpec(4, "asymmetric", "group", 128), "float16", 8192 * 8192 // 2 + 2 * 2 * 8192 * 64),
    (QuantSpec(4, "symmetric", "group", 128), "float16", 8192 * 8192 // 2 + 2 * 8192 * 64),
    (QuantSpec(8, "symmetric", "channel"), "bfloat16", 8192 * 8192 + 2 * 8192),
    (QuantSpec(2, "asymmetric", "tensor"), "float32", 8192 * 8192 // 4 + 4 + 4),
    (QuantSpec(2, "asymmetric", "group", 32), "float32", 8192 * 8192 // 4 + 2 * 4 * 8192 * 256),
])
def test_weight_bytes_are_exact(spec, dtype, expected_bytes):
    mem = weight_memory(spec, 8192, 8192, dtype)
    assert mem["weight_bytes"] == expected_bytes
    assert mem["bits_per_weight"] == 8 * expected_bytes / 8192 ** 2
    assert mem["compression_vs_fp16"] == pytest.approx(16 / mem["bits_per_weight"])


def test_int4_g128_fp16_is_4_25_bits():
    assert weight_memory(QuantSpec(4, "asymmetric", "group", 128), 4096, 4096, "float16")["bits_per_weight"] == 4.25


def test_sub_byte_rows_round_up_to_whole_bytes():
    """K = 7 at 4 bits needs 4 bytes a row (the last half byte is padding), at 2 bits 2 bytes."""
    assert QuantSpec(4, "symmetric", "channel").nbytes(3, 7, torch.float16) == 3 * 4 + 3 * 2
    assert QuantSpec(2, "symmetric", "channel").nbytes(3, 7, torch.float16) == 3 * 2 + 3 * 2


def test_weight_error_by_hand():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.0]])
    w_hat = torch.tensor([[1.5, -2.0, 2.0, 0.0]])
    e = weight_error(w, w_hat)
    assert e["mse"] == pytest.approx((0.25 + 1.0) / 4)
    assert e["mae"] == pytest.approx(1.5 / 4)
    assert e["max_abs_err"] == 1.0
    assert e["snr_db"] == pytest.approx(10 * math.log10((1 + 4 + 9) / 4 / e["mse"]))
    assert e["rel_err"] == pytest.approx(math.sqrt(1.25) / math.sqrt(14))
    assert weight_error(w, w)["snr_db"] == math.inf


def test_noise_over_an_all_zero_reference_is_no_signal_not_a_perfect_one():
    from quantbench.harness.ops.metrics import output_error
    zero = torch.zeros(2)
    assert output_error(torch.tensor([1.0, 2.0]), zero) == (math.inf, -math.inf)
    assert output_error(zero, zero) == (0.0, math.inf)
    assert weight_error(zero, torch.tensor([0.5, 0.0]))["snr_db"] == -math.inf
    assert weight_error(zero, zero)["snr_db"] == math.inf
