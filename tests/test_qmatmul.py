"""The fused dequantize-matmul kernels against a float64 product with the same quantized weights.

Tolerance by rule, not by hand: the output is rounded once to its dtype (2 eps) and accumulated in
float32 over K terms (K eps of float32, the worst-case bound for a sum).
"""

import dataclasses

import pytest
import torch

from quantbench.kernels import (BITS, INTEGER_SCHEMES, SCHEMES, QuantSpec, dequantize, dequantize_ref, qmatmul,
                                qmatmul_ref, quantize, quantize_ref, spec_exists)
from quantbench.kernels.checks import cdiv
from quantbench.kernels.prepared import prepared
from quantbench.kernels.qgemm import qgemm_kernel
from quantbench.kernels.split_k import split_workspace

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
SPECS = [QuantSpec(b, s, g, gs) for b in BITS for s in SCHEMES
         for g, gs in (("tensor", None), ("channel", None), ("group", 32), ("group", 128)) if spec_exists(b, s, g)]


def tolerance(dtype: torch.dtype, k: int) -> float:
    return 2 * torch.finfo(dtype).eps + k * torch.finfo(torch.float32).eps


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("spec", SPECS, ids=lambda v: f"{v.bits}b-{v.scheme[:4]}-{v.granularity}{v.group_size or ''}")
@pytest.mark.parametrize("m", [1, 3, 16, 33])
def test_qmatmul_matches_float64_on_the_same_weights(spec, m, gen, device):
    n, k = 37, 256  # N not a multiple of any block
    for dtype in DTYPES:
        w = torch.randn(n, k, generator=gen).to(dtype).to(device)
        x = torch.randn(m, k, generator=gen).to(dtype).to(device)
        q = quantize_ref(w, spec)
        y = qmatmul(x, q)
        assert y.dtype == dtype and y.shape == (m, n)
        exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
        err = rel_err(y, exact)
        assert err <= tolerance(dtype, k), f"{dtype}: rel err {err:.2e} > {tolerance(dtype, k):.2e}"


@pytest.mark.parametrize("m", [1, 20, 70])  # the GEMV, the split-K GEMM and the GEMM
@pytest.mark.parametrize("scheme", INTEGER_SCHEMES)  # the codebook schemes': test_codebook_formats.py
def test_k_not_a_multiple_of_any_block(m, scheme, gen, device):
    spec = QuantSpec(4, scheme, "channel")
    w = torch.randn(19, 150, generator=gen).to(device)
    x = torch.randn(m, 150, generator=gen).to(device)
    q = quantize_ref(w, spec)
    exact = x.double() @ dequantize_ref(q).double().t()
    assert rel_err(qmatmul(x, q), exact) <= tolerance(torch.float32, 150)


@pytest.mark.parametrize("even", [False, True], ids=["masked", "even"])
@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(2, "symmetric", "group", 64),
                                  QuantSpec(4, "nf4", "group", 64), QuantSpec(4, "symmetric", "channel")], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_gemm_tiles_that_hold_several_groups(spec, dtype, even, gen, device):
    """The GEMMs' sub-byte route, one dot per field of the bytes, with a K tile of 128 columns over
    groups of 32 or 64 (each field's tile then holds 2 or 4 groups of bytes), K split in two, and
    tiles that do (even) or do not divide M and N: against float64. qmatmul's interpreter config
    has tiles no wider than a group; this one reaches the grouped form (apply_params over
    [BLOCK_N, groups, bytes], half_fields' on the GPU), per-group scales read group-major as
    qmatmul gives the GEMMs (prepared.gemm_scales: asymmetric 2-byte ones as scale+zero words)."""
    n, k, m = (64, 512, 16) if even else (48, 512, 5)
    w = torch.randn(n, k, generator=gen).to(dtype).to(device)
    x = torch.randn(m, k, generator=gen).to(dtype).to(device)
    q = quantize_ref(w, spec)
    p = prepared(q)
    sa = p.gemm_scales()
    assert sa.words == (spec.scheme == "asymmetric" and spec.granularity == "group" and dtype != torch.float32)
    assert sa.stride_group == (n if spec.granularity == "group" else 1)
    y = torch.empty(m, n, dtype=dtype, device=device)
    partials, tickets = split_workspace(x.device, m * n, cdiv(m, 16) * cdiv(n, 32))
    qgemm_kernel[(cdiv(m, 16) * cdiv(n, 32), 2)](
        x, q.codes, sa.scales, sa.zeros, p.table, p.second, p.mean, y, partials, tickets, m, n, k, x.stride(0),
        q.codes.stride(0), sa.stride_row, sa.stride_group, y.stride(0), 16, **p.fmt, IEEE=dtype == torch.float32,
        BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, GROUP_M=4, SPLIT_K=2, SCALE_ZERO_WORDS=sa.words,
        EVEN_N=even, EVEN_K=even)
    exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
    err = rel_err(y, exact)
    assert err <= tolerance(dtype, k), f"rel err {err:.2e} > {tolerance(dtype, k):.2e}"


@pytest.mark.parametrize("group_major", [False, True], ids=["row-major", "group-major"])
@pytest.mark.parametrize("shift", [0, 1], ids=["aligned", "scales-2-bytes-off"])
def test_the_gemms_read_symmetric_group_scales_group_major(shift, group_major, gen, device):
    """The GEMMs read 2-byte symmetric per-group scales group-major (prepared.gemm_scales), as the
    GEMV does: row-major ones from the GEMV's copy, group-major ones (strides (1, N)) in place,
    also where they start 2 bytes off a 4-byte word; the product right either way (against float64)."""
    spec = QuantSpec(4, "symmetric", "group", 32)
    n, k, m = 64, 512, 16
    w = torch.randn(n, k, generator=gen).half().to(device)
    x = torch.randn(m, k, generator=gen).half().to(device)
    q = quantize_ref(w, spec)
    storage = torch.empty(q.scales.numel() + shift, dtype=q.scales.dtype, device=device)[shift:]
    scales = storage.view(n, -1) if not group_major else storage.view(-1, n).t()
    scales.copy_(q.scales)
    q = dataclasses.replace(q, scales=scales)
    sa = prepared(q).gemm_scales()
    assert not sa.words and (sa.stride_row, sa.stride_group) == (1, n) and sa.scales is prepared(q).gemv_scales().scales
    assert (sa.scales.data_ptr() == scales.data_ptr()) == group_major and (sa.extra_bytes == 0) == group_major
    exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
    assert rel_err(qmatmul(x, q), exact) <= tolerance(torch.float16, k)


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(8, "asymmetric", "group", 32),
                                  QuantSpec(2, "asymmetric", "group", 64), QuantSpec(4, "symmetric", "group", 32),
                                  QuantSpec(4, "nf4", "group", 64)], ids=str)
def test_the_kernels_read_every_layout_of_the_scales_alike(spec, gen, device):
    """A weight's scales (and zeros) as quantize writes them (group-major scale+zero pairs for
    asymmetric ones, row-major for the others), row-major (.contiguous()) and group-major (strides
    (1, N)), as a weight made elsewhere may hold them: dequantize and every qmatmul path give the
    same bits from each (the GEMV and the GEMMs read the words or a copy, the strided routes
    read through the strides), right against float64."""
    n, k = 40, 256
    w = torch.randn(n, k, generator=gen).half().to(device)
    q = quantize(w, spec)
    zeros = (lambda t: None) if q.zeros is None else (lambda t: t(q.zeros))
    row_major = dataclasses.replace(q, scales=q.scales.contiguous(), zeros=zeros(torch.Tensor.contiguous))
    group_major = dataclasses.replace(q, scales=q.scales.t().contiguous().t(),
                                      zeros=zeros(lambda z: z.t().contiguous().t()))
    assert row_major.scales.stride() == (k // spec.group_size, 1) and group_major.scales.stride() == (1, n)
    assert q.scales.stride() == ((2, 2 * n) if spec.scheme == "asymmetric" else (k // spec.group_size, 1))
    assert torch.equal(dequantize(q), dequantize(row_major)) and torch.equal(dequantize(q), dequantize(group_major))
    for m in (1, 16, 96):
        x = torch.randn(m, k, generator=gen).half().to(device)
        y = qmatmul(x, q)
        assert torch.equal(y, qmatmul(x, row_major)) and torch.equal(y, qmatmul(x, group_major)), m
        exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
        assert rel_err(y, exact) <= tolerance(torch.float16, k), m


def test_zeros_must_have_the_scales_strides(gen, device):
    w = torch.randn(16, 64, generator=gen).half().to(device)
    q = quantize(w, QuantSpec(4, "asymmetric", "group", 32))
    mixed = dataclasses.replace(q, zeros=q.zeros.contiguous())
    with pytest.raises(ValueError, match=r"zeros must have the scales' strides, got \(2, 1\) against \(2, 32\)"):
        qmatmul(torch.randn(1, 64, generator=gen).half().to(device), mixed)


def test_reference_is_the_seed_forward_pass(gen):
    w, x = torch.randn(8, 64, generator=gen), torch.randn(4, 64, generator=gen)
    q = quantize_ref(w, QuantSpec(8, "asymmetric", "tensor"))
    torch.testing.assert_close(qmatmul_ref(x, q), torch.matmul(x, dequantize_ref(q).T), rtol=0, atol=0)


def test_mismatched_k_names_x(device):
    q = quantize_ref(torch.randn(8, 64).to(device), QuantSpec(8, "symmetric", "channel"))
    with pytest.raises(ValueError, match=r"x must be \[M, K\] with K = 64"):
        qmatmul(torch.randn(2, 32).to(device), q)


def test_split_k_leaves_its_workspace_clear(gen, device):
    """The split-K GEMM's last program per tile clears the shared partial sums and tickets, so a
    second call (another shape) starts from zero and gives the same kind of answer."""
    from quantbench.kernels import split_k
    spec = QuantSpec(4, "asymmetric", "group", 32)
    for n, m in [(40, 20), (33, 7)]:
        w = torch.randn(n, 64, generator=gen).to(device)
        x = torch.randn(m, 64, generator=gen).to(device)
        q = quantize_ref(w, spec)
        exact = x.double() @ dequantize_ref(q).double().t()
        assert rel_err(qmatmul(x, q), exact) <= tolerance(torch.float32, 64)
        partials, tickets = split_k._workspaces[x.device]
        assert not partials.any() and not tickets.any()


def test_the_product_check_counts_the_k_terms_of_the_reduction_not_n():
    """A relative error of 1e-5 is within float32 accumulation over 4096 terms, not over 8: the
    bound follows K, whatever N is (28672 x 8192 weights once got N's looser bound)."""
    from quantbench.harness.ops.matmul import product_problem
    exact = torch.randn(2, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = (exact * (1 + 1e-5)).float()
    assert product_problem(out, exact, 4096) is None
    assert product_problem(out, exact, 8) is not None
