"""The GEMV's activations read a code word at a time (kernels/unit_activations.py): field j of
each unit gets x[first column + j], for 8 and 16 fields, in every activation dtype, with the
columns past K read as zero. Under the interpreter and on the GPU (QUANTBENCH_TEST_DEVICE=cuda)."""

import pytest
import torch
import triton
import triton.language as tl

from quantbench.kernels.unit_activations import word_activations


@triton.jit
def unit_fields_kernel(x_ptr, out_ptr, K, A: tl.constexpr, B: tl.constexpr, FIELDS: tl.constexpr,
                       EVEN_K: tl.constexpr):
    """out[j, a, b] = x[(a * B + b) * FIELDS + j] as word_activations returns it."""
    units = tl.arange(0, A)[:, None] * B + tl.arange(0, B)[None, :]
    fields = word_activations(x_ptr, units * FIELDS, K, FIELDS, EVEN_K)
    for j in tl.static_range(FIELDS):
        tl.store(out_ptr + j * A * B + units, fields[j])


@pytest.mark.parametrize("fields", [8, 16])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("k_short", [0, 5])  # K a whole number of units, or 5 columns short of it
def test_each_field_gets_the_activation_of_its_own_column(fields, dtype, k_short, gen, device):
    a, b = 2, 4
    k = a * b * fields - k_short
    x = torch.randn(k, generator=gen).to(dtype).to(device)
    out = torch.full((fields, a, b), float("nan"), dtype=torch.float32, device=device)
    unit_fields_kernel[(1,)](x, out, k, A=a, B=b, FIELDS=fields, EVEN_K=k_short == 0)
    padded = torch.cat([x.float().cpu(), torch.zeros(k_short)])
    expected = padded.reshape(a, b, fields).permute(2, 0, 1)
    assert torch.equal(out.cpu(), expected)
