"""Every kernel path compiled for the GPU, checked against its reference or float64.

The interpreter runs one small config of each kernel with every mask on; these shapes are chosen
so that the compiled kernels take the paths the interpreter never does: the GEMV's unmasked
(EVEN_N and EVEN_K) loads over int32 words, its masked loads over words and over bytes, the
split-K GEMM's atomics and tickets, the plain GEMM, each autotuned config that the shape leaves.
Formats are chosen to take every value of every format constant (bits, scheme, granularity,
group) through each path without compiling the whole product (each format is a compile per
config; the whole product would take the suite past a few minutes).

Tolerances by rule, as in tests/test_qmatmul.py: products against float64 with the same
quantized weights within 2 eps(dtype) + K eps(float32).
"""

import dataclasses

import pytest
import torch
import triton

from quantbench.harness.ops.metrics import dequant_close
from quantbench.kernels import (QuantSpec, dequantize, dequantize_ref, pack_weights, qmatmul, qmatmul_path, quantize,
                                quantize_ref, quantize_tokens, quantize_tokens_ref, w8a8_matmul, w8a8_matmul_ref)
from quantbench.kernels import launching
from quantbench.kernels.checks import cdiv
from quantbench.kernels.matmul_tiles import SPLIT_TILES
from quantbench.kernels.prepared import prepared
from quantbench.kernels.qgemm import qgemm_kernel
from quantbench.kernels.split_k import split_workspace

CUDA = torch.device("cuda")
CODEBOOK_SPECS = [QuantSpec(4, "nf4", "group", 64), QuantSpec(4, "nf4_dq", "group", 32),
                  QuantSpec(8, "fp8", "channel"), QuantSpec(8, "fp8", "tensor")]
ALL_SPECS = [QuantSpec(b, s, g, gs) for b in (8, 4, 2) for s in ("asymmetric", "symmetric")
             for g, gs in (("tensor", None), ("channel", None), ("group", 32), ("group", 128))] + CODEBOOK_SPECS
# each bits, scheme, granularity and group size at least once, and every bits x granularity pair
MATMUL_SPECS = [QuantSpec(8, "symmetric", "channel"), QuantSpec(8, "asymmetric", "group", 128),
                QuantSpec(4, "asymmetric", "group", 128), QuantSpec(4, "symmetric", "group", 32),
                QuantSpec(4, "asymmetric", "channel"), QuantSpec(4, "symmetric", "tensor"),
                QuantSpec(2, "asymmetric", "group", 32), QuantSpec(2, "symmetric", "channel"),
                QuantSpec(8, "asymmetric", "tensor"), QuantSpec(2, "asymmetric", "group", 128)] + CODEBOOK_SPECS
# (M, N, K, what it takes)
MATMUL_PATHS = [
    (1, 64, 256, "gemv-even"),         # N, K multiples of every GEMV tile left: no masks, int32 words
    (1, 64, 384, "gemv-odd-k"),        # K cut inside every tile left, N whole: masked loads
    (1, 37, 512, "gemv-odd-n"),        # N cut inside a tile, K whole: masked loads
    (16, 64, 512, "split-k"),          # M <= 64: K split over programs, atomics and tickets
    (100, 96, 512, "gemm"),            # M > 64: the plain tiled GEMM
    (1100, 96, 512, "dequantize+cublas"),  # M >= DEQUANT_MIN_M (float16, bfloat16): Triton dequantize, cuBLAS
]
# the name qmatmul_path gives each row's kernel
KERNEL_OF = {"gemv-even": "gemv", "gemv-odd-k": "gemv", "gemv-odd-n": "gemv", "split-k": "split-k gemm",
             "gemm": "gemm", "dequantize+cublas": "dequantize+cublas"}


def fmt(spec: QuantSpec) -> str:
    name = f"int{spec.bits}-{spec.scheme[:4]}" if spec.codebook == "integer" else spec.scheme
    return f"{name}-{spec.granularity}{spec.group_size or ''}"


def tolerance(dtype: torch.dtype, k: int) -> float:
    return 2 * torch.finfo(dtype).eps + k * torch.finfo(torch.float32).eps


def rel_err(y: torch.Tensor, exact: torch.Tensor) -> float:
    return ((y.double() - exact).norm() / exact.norm()).item()


def exact_product(x: torch.Tensor, q) -> torch.Tensor:
    """x @ W_hat^T in float64 with the same quantized weights."""
    return x.double() @ dequantize_ref(q, torch.float32).double().t()


def assert_same(a, b) -> None:
    for part in ("codes", "scales", "zeros"):
        x, y = getattr(a, part), getattr(b, part)
        if y is None:
            assert x is None, part
            continue
        bad = (x != y).nonzero()
        assert bad.numel() == 0, f"{part}: {len(bad)} differ, first at {bad[:3].tolist()}"


# --- quantize and dequantize --------------------------------------------------------------------

@pytest.mark.parametrize("spec", ALL_SPECS, ids=fmt)
@pytest.mark.parametrize("n,k", [(64, 1024), (33, 384)])
def test_quantize_and_dequantize_every_format(spec, n, k):
    w = (torch.randn(n, k, generator=torch.Generator().manual_seed(n * k)) * 2).half().to(CUDA)
    q = quantize(w, spec)
    assert_same(q, quantize_ref(w, spec))
    got, want = dequantize(q), dequantize_ref(q)
    close = dequant_close(got, want)
    assert close.all(), f"{(~close).sum().item()} of {close.numel()} differ"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 128), QuantSpec(8, "symmetric", "channel"),
                                  QuantSpec(2, "asymmetric", "tensor"), QuantSpec(8, "fp8", "channel"),
                                  QuantSpec(4, "nf4_dq", "group", 64)], ids=fmt)
@pytest.mark.parametrize("n,k", [(17, 8192), (5, 130)])
def test_quantize_other_dtypes_long_and_odd_rows(spec, n, k, dtype):
    """Rows of 8192 (the per-channel tiling of whole rows), rows cut inside a byte, float32 and bfloat16."""
    if spec.group_size and k % spec.group_size:
        pytest.skip("a group must divide K")
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(k)).to(dtype).to(CUDA)
    q = quantize(w, spec)
    assert_same(q, quantize_ref(w, spec))
    assert dequant_close(dequantize(q), dequantize_ref(q)).all()


# --- the weight-only matmul ---------------------------------------------------------------------

@pytest.mark.parametrize("m,n,k,path", MATMUL_PATHS, ids=[p[3] for p in MATMUL_PATHS])
@pytest.mark.parametrize("spec", MATMUL_SPECS, ids=fmt)
def test_qmatmul_every_path_and_format(spec, m, n, k, path):
    g = torch.Generator().manual_seed(m * n + k)
    w = torch.randn(n, k, generator=g).half().to(CUDA)
    x = torch.randn(m, k, generator=g).half().to(CUDA)
    q = quantize(w, spec)
    assert qmatmul_path(m, x.dtype, spec.bits) == KERNEL_OF[path]
    exact, bound = exact_product(x, q), tolerance(torch.float16, k)
    # the first call goes through Triton (and its autotuner); the second launches the compiled
    # kernel directly (kernels/launching.py)
    for call in ("first", "second"):
        y = qmatmul(x, q)
        err = rel_err(y, exact)
        assert y.shape == (m, n) and err <= bound, f"{path} {fmt(spec)} {call} call: rel err {err:.2e} > {bound:.2e}"


@pytest.mark.parametrize("splits", [1, 3, 4])
@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 128), QuantSpec(8, "asymmetric", "channel"),
                                  QuantSpec(2, "symmetric", "group", 32)], ids=fmt)
def test_gemv_split_k(spec, splits):
    """The GEMV with K split over programs (partial sums added atomically, the last program of a
    row block writing it), whatever the autotuner picks; 3 leaves the last split a short range."""
    from quantbench.kernels import prepared, quantized_matmul as qm, split_k
    g = torch.Generator().manual_seed(splits)
    n, k = 96, 1408
    w, x = torch.randn(n, k, generator=g).half().to(CUDA), torch.randn(1, k, generator=g).half().to(CUDA)
    q = quantize(w, spec)
    y = torch.empty(1, n, dtype=x.dtype, device=CUDA)
    units = prepared.code_units(q.codes, spec.bits)
    params = prepared.prepared(q).gemv_scales()  # the scales as the GEMV reads them (group-major for groups)
    partials, tickets = split_k.split_workspace(CUDA, n, n)
    for _ in range(3):
        qm.qgemv_kernel[(triton.cdiv(n, 32), splits)](
            x, units, params.scales, params.zeros, q.scales, q.scales, q.scales, y, partials,
            tickets, n, k, units.stride(0), params.stride_row, params.stride_group, units.shape[1], BITS=spec.bits,
            FIELDS=units.element_size() * spec.per_byte, OFFSET=spec.offset, CODE=0, SYMMETRIC=spec.symmetric,
            GRANULARITY=prepared.GRANULARITY_IDS[spec.granularity], GROUP=spec.group_size or 1, DQ=False,
            SCALE_DTYPE=prepared.SCALE_DTYPE_IDS[q.dtype], BLOCK_N=32,
            BLOCK_K=128, SPLIT_K=splits, EVEN_N=True, EVEN_K=False, SCALE_ZERO_WORDS=params.words)
        err, bound = rel_err(y, exact_product(x, q)), tolerance(torch.float16, k)
        assert err <= bound, f"split {splits}: rel err {err:.2e} > {bound:.2e}"
    torch.cuda.synchronize()
    assert not partials.any() and not tickets.any()


def test_launchers_reuse_what_triton_compiled():
    """After the calls above, each launcher kept plans, and launches directly (no fallback)."""
    from quantbench.kernels import dequantization, quantization, quantized_matmul as qm, w8a8
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(64, 256, generator=g).half().to(CUDA), torch.randn(1, 256, generator=g).half().to(CUDA)
    q = quantize(w, QuantSpec(4, "asymmetric", "group", 128))
    w_int8, w_scales = pack_weights(quantize(w, QuantSpec(8, "symmetric", "channel")))
    for _ in range(2):
        qmatmul(x, q), qmatmul(x.repeat(16, 1), q), qmatmul(x.repeat(100, 1), q), dequantize(q), quantize(w, q.spec)
        w8a8_matmul(x.repeat(32, 1), w_int8, w_scales)
    for launcher in (qm._gemv_launch, qm._split_launch, qm._gemm_launch, dequantization._dequantize_launch,
                     quantization._quantize_launch, w8a8._tokens_launch, w8a8._int8_gemm_launch):
        assert launcher.direct and launcher.plans, launcher.tuned
    # each path's kernel_config is one of its autotuner's configs, read after a direct launch; the
    # fused paths name a group-major copy of the scales they read, after the config: none for
    # quantize's scale+zero pairs, one for the same scales held row-major
    row_major = dataclasses.replace(q, scales=q.scales.contiguous(), zeros=q.zeros.contiguous())
    for weight, layout in ((q, ""), (row_major, "scale+zero words group-major (+512 bytes)")):  # 2 x 64 x 4 bytes
        for m, tuned in ((1, qm.qgemv_tuned), (16, qm.qgemm_split_tuned), (100, qm.qgemm_tuned)):
            qmatmul(x.repeat(m, 1), weight)
            config, _, rest = qm.qmatmul_config(x.repeat(m, 1), weight).partition("; ")
            assert config in {launching.describe_choice(c) for c in tuned.configs} and rest == layout


@pytest.mark.parametrize("m,n,k,path", MATMUL_PATHS, ids=[p[3] for p in MATMUL_PATHS])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_qmatmul_every_path_in_bfloat16_and_float32(dtype, m, n, k, path):
    g = torch.Generator().manual_seed(7)
    w = torch.randn(n, k, generator=g).to(dtype).to(CUDA)
    x = torch.randn(m, k, generator=g).to(dtype).to(CUDA)
    q = quantize(w, QuantSpec(4, "asymmetric", "group", 128))
    y = qmatmul(x, q)
    err, bound = rel_err(y, exact_product(x, q)), tolerance(dtype, k)
    assert y.dtype == dtype and err <= bound, f"{path} {dtype}: rel err {err:.2e} > {bound:.2e}"


def test_gemv_over_bytes_when_rows_are_not_whole_words():
    """int4 rows of 150 codes are 75 bytes: the GEMV reads them as bytes, not int32 words."""
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(19, 150, generator=g).half().to(CUDA), torch.randn(1, 150, generator=g).half().to(CUDA)
    q = quantize(w, QuantSpec(4, "symmetric", "channel"))
    assert rel_err(qmatmul(x, q), exact_product(x, q)) <= tolerance(torch.float16, 150)


@pytest.mark.parametrize("m,n,k,path", [p for p in MATMUL_PATHS if p[0] > 1], ids=[p[3] for p in MATMUL_PATHS if p[0] > 1])
def test_float32_is_multiplied_in_float32_not_tf32(m, n, k, path):
    """TF32 keeps 10 mantissa bits: its products are off by ~1e-4 relative, over the float32
    bound at this K. The test first shows that TF32 would fail it, then that the kernel passes
    (the shapes and format of the float32 path test above, so its tuned kernels are reused)."""
    g = torch.Generator().manual_seed(11)
    w, x = torch.randn(n, k, generator=g).to(CUDA), torch.randn(m, k, generator=g).to(CUDA)
    q = quantize(w, QuantSpec(4, "asymmetric", "group", 128))
    exact, bound = exact_product(x, q), tolerance(torch.float32, k)
    w_hat = dequantize_ref(q, torch.float32)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        tf32_err = rel_err(x @ w_hat.t(), exact)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert tf32_err > 2 * bound, f"TF32 error {tf32_err:.2e} would pass the bound {bound:.2e}: no test"
    err = rel_err(qmatmul(x, q), exact)
    assert err <= bound, f"rel err {err:.2e} > {bound:.2e} (TF32 gives {tf32_err:.2e})"


# the split-K tiles on fewer than 4 warps: there Triton multiplies with mma.sync, not wgmma, a
# different lowering of the same dots, and the autotuner may pick them for any format
MMA_SYNC_TILES = [t for t in SPLIT_TILES if t[4] < 4]


@pytest.mark.parametrize("tile", MMA_SYNC_TILES, ids=str)
@pytest.mark.parametrize("spec,dtype", [(QuantSpec(4, "asymmetric", "group", 128), torch.float16),
                                        (QuantSpec(4, "asymmetric", "group", 128), torch.bfloat16),
                                        (QuantSpec(8, "symmetric", "channel"), torch.float16),
                                        (QuantSpec(2, "asymmetric", "group", 32), torch.float16),
                                        (QuantSpec(4, "nf4_dq", "group", 64), torch.bfloat16),
                                        (QuantSpec(8, "fp8", "channel"), torch.float16)],
                         ids=lambda v: fmt(v) if isinstance(v, QuantSpec) else str(v)[6:])
def test_split_k_tiles_on_two_warps(tile, spec, dtype):
    """Each split-K tile of fewer than 4 warps, launched directly (not through the autotuner,
    which keeps only its pick), on the sub-byte route and its scale+zero words (int4 g128), bytes
    with the scale in the epilogue (int8), four fields a byte (int2), a codebook with decoded
    scales (nf4_dq) and e4m3 values (fp8): against float64, twice in a row (the workspace clean
    after the first)."""
    bm, bn, bk, splits, warps, stages = tile
    m, n, k = 16, 2 * bn, 4 * bk
    g = torch.Generator().manual_seed(bn + bk)
    w = torch.randn(n, k, generator=g).to(dtype).to(CUDA)
    x = torch.randn(m, k, generator=g).to(dtype).to(CUDA)
    q = quantize(w, spec)
    p = prepared(q)
    sa = p.gemm_scales()  # as qmatmul gives them (4- and 2-bit groups: group-major)
    exact, bound = exact_product(x, q), tolerance(dtype, k)
    for call in ("first", "second"):
        y = torch.empty(m, n, dtype=dtype, device=CUDA)
        partials, tickets = split_workspace(CUDA, m * n, cdiv(m, 16) * cdiv(n, 16))
        qgemm_kernel[(cdiv(m, bm) * cdiv(n, bn), splits)](
            x, q.codes, sa.scales, sa.zeros, p.table, p.second, p.mean, y, partials, tickets, m, n, k, x.stride(0),
            q.codes.stride(0), sa.stride_row, sa.stride_group, y.stride(0), 16, **p.fmt, IEEE=False, BLOCK_M=bm,
            BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, SPLIT_K=splits, SCALE_ZERO_WORDS=sa.words,
            EVEN_N=True, EVEN_K=True, num_warps=warps, num_stages=stages)
        err = rel_err(y, exact)
        assert err <= bound, f"{tile} {call} call: rel err {err:.2e} > {bound:.2e}"
    torch.cuda.synchronize()
    assert not partials.any() and not tickets.any()


def test_split_k_sums_every_partial_on_every_call():
    """Many split-K programs per tile racing on the same tickets, 30 calls in a row without a
    synchronisation between them: each output must hold every partial sum (a program that took
    its ticket before all of its threads had added their partials would drop some), and the
    shared workspace must be clear afterwards."""
    from quantbench.kernels import split_k
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4096, 4096, generator=g).half().to(CUDA)
    x = torch.randn(16, 4096, generator=g).half().to(CUDA)
    q = quantize(w, QuantSpec(4, "asymmetric", "group", 128))
    exact, bound = exact_product(x, q), tolerance(torch.float16, 4096)
    outputs = [qmatmul(x, q) for _ in range(30)]
    errors = [rel_err(y, exact) for y in outputs]
    assert max(errors) <= bound, f"worst of 30 calls: rel err {max(errors):.2e} > {bound:.2e}"
    torch.cuda.synchronize()
    partials, tickets = split_k._workspaces[x.device]
    assert not partials.any() and not tickets.any()


# --- W8A8 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,k", [(5, 1500), (33, 130), (4, 8192)])
def test_token_codes_equal_reference(m, k):
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        x = (torch.randn(m, k, generator=torch.Generator().manual_seed(k)) * 3).to(dtype).to(CUDA)
        xq, sx = quantize_tokens(x)
        xq_ref, sx_ref = quantize_tokens_ref(x)
        assert torch.equal(sx, sx_ref) and torch.equal(xq, xq_ref)


@pytest.mark.parametrize("m", [1, 40, 100])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_int8_gemm_matches_reference(m, dtype):
    g = torch.Generator().manual_seed(m)
    w = torch.randn(96, 512, generator=g).to(dtype).to(CUDA)
    x = torch.randn(m, 512, generator=g).to(dtype).to(CUDA)
    w_int8, w_scales = pack_weights(quantize_ref(w, QuantSpec(8, "symmetric", "channel")))
    y, ref = w8a8_matmul(x, w_int8, w_scales), w8a8_matmul_ref(x, w_int8, w_scales)
    # integer sums are exact; what remains is the float32 epilogue and one rounding to dtype
    rel = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
    assert y.dtype == dtype and rel <= 2 * torch.finfo(dtype).eps, f"{rel:.2e}"
