"""Weight-only quantized matmul with the dequantization fused in: y = x @ dequantize(Wq)^T.

W8A16, W4A16 and W2A16 (any scheme and granularity of spec.py) with float32, float16 or bfloat16
activations and float32 accumulation. The codes are read in the packed layout that ``quantize``
writes ([N, ceil(K * bits / 8)] uint8, packed along K) and are never expanded in memory: each
program unpacks and scales its [BLOCK_N, BLOCK_K] weight tile in registers.

Two kernels, chosen by M as the fast libraries do:
- ``qgemv_kernel`` for M <= GEMV_MAX_M: no tensor cores (a tl.dot padded to 16 rows wastes most
  of its work at M = 1); each program reduces a few output columns over all of K with a
  broadcast multiply and a sum, and small BLOCK_N gives enough programs to fill the GPU.
- ``qgemm_kernel`` otherwise: a tiled tl.dot GEMM with the dequantization inside the K loop.
Both are autotuned, keyed on the M bucket, N, K and the format; configs that cannot apply are
pruned. Under the interpreter one small config is used instead.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.testing
import triton.language as tl

from .checks import check_matrix, check_same_device, interpreting
from .dequantization import GRANULARITY_IDS, _check_quantized, dequant_tile, dequantize_ref, unpack_tile
from .spec import QuantizedTensor

GEMV_MAX_M = 4


@triton.jit
def row_params(scales_ptr, zeros_ptr, rows, N, stride_sn, col, SYMMETRIC: tl.constexpr):
    """float32 scale and zero [len(rows)] of column `col` of the scale matrix (zero 0 if symmetric)."""
    ok = rows < N
    scale = tl.load(scales_ptr + rows * stride_sn + col, mask=ok, other=1.0).to(tl.float32)
    if SYMMETRIC:
        zero = tl.zeros_like(scale)
    else:
        zero = tl.load(zeros_ptr + rows * stride_sn + col, mask=ok, other=0.0).to(tl.float32)
    return scale, zero


@triton.jit
def qgemv_kernel(x_ptr, codes_ptr, scales_ptr, zeros_ptr, y_ptr, M, N, K,
                 stride_xm, stride_cn, stride_sn, stride_ym, M_BUCKET,
                 BITS: tl.constexpr, OFFSET: tl.constexpr, SYMMETRIC: tl.constexpr,
                 GRANULARITY: tl.constexpr, GROUP: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[M, N] = x[M, K] @ W^T for M <= BLOCK_M (a power of two, at most GEMV_MAX_M).
    Grid: (cdiv(N, BLOCK_N),). W as in dequant_tile; x and y have unit stride along their rows."""
    pid_n = tl.program_id(0)
    rows_w = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_x = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows_x[:, None] * stride_xm + cols[None, :],
                    mask=(rows_x[:, None] < M) & (cols[None, :] < K), other=0.0).to(tl.float32)
        w = dequant_tile(codes_ptr, scales_ptr, zeros_ptr, rows_w, k0, N, K, stride_cn, stride_sn,
                         BITS, OFFSET, SYMMETRIC, GRANULARITY, GROUP, BLOCK_N, BLOCK_K)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    mask = (rows_x[:, None] < M) & (rows_w[None, :] < N)
    tl.store(y_ptr + rows_x[:, None] * stride_ym + rows_w[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def qgemm_kernel(x_ptr, codes_ptr, scales_ptr, zeros_ptr, y_ptr, M, N, K,
                 stride_xm, stride_cn, stride_sn, stride_ym, M_BUCKET,
                 BITS: tl.constexpr, OFFSET: tl.constexpr, SYMMETRIC: tl.constexpr,
                 GRANULARITY: tl.constexpr, GROUP: tl.constexpr, IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr):
    """y[M, N] = x[M, K] @ W^T with tl.dot. Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), programs
    ordered in GROUP_M-row bands so that neighbouring programs share weight tiles in L2.

    Per-group scales: each weight tile is dequantized to x's dtype inside the K loop. Per-channel
    and per-tensor scales: the integer codes (exact in fp16 and bf16) go into the dot and the
    scale and zero are applied once, in the epilogue: s (x . q) + z sum(x).
    IEEE: both operands in float32, multiplied without TF32 (float32 activations; bfloat16 under
    the interpreter, whose dot reads bfloat16's raw bits as integers).
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    band = GROUP_M * num_n
    first_m = (pid // band) * GROUP_M
    band_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % band) % band_m
    pid_n = (pid % band) // band_m

    rows_x = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_w = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    x_sum = tl.zeros((BLOCK_M,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows_x[:, None] * stride_xm + cols[None, :],
                    mask=(rows_x[:, None] < M) & (cols[None, :] < K), other=0.0)
        if GRANULARITY == 2:
            w = dequant_tile(codes_ptr, scales_ptr, zeros_ptr, rows_w, k0, N, K, stride_cn, stride_sn,
                             BITS, OFFSET, SYMMETRIC, GRANULARITY, GROUP, BLOCK_N, BLOCK_K)
        else:
            w = unpack_tile(codes_ptr, rows_w, k0, N, K, stride_cn, BITS, OFFSET, BLOCK_N, BLOCK_K)
            if not SYMMETRIC:
                x_sum += tl.sum(x.to(tl.float32), axis=1)
        w = tl.where((cols < K)[None, :], w, 0.0)
        if IEEE:
            acc = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    if GRANULARITY != 2:
        scale, zero = row_params(scales_ptr, zeros_ptr, rows_w * (GRANULARITY == 1), N, stride_sn, 0, SYMMETRIC)
        acc = acc * scale[None, :] + x_sum[:, None] * zero[None, :]
    mask = (rows_x[:, None] < M) & (rows_w[None, :] < N)
    tl.store(y_ptr + rows_x[:, None] * stride_ym + rows_w[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def _prune(configs, named_args, **kwargs):
    """Drop configs with tiles wider than the problem; keep the narrowest if nothing else is left."""
    n, k = named_args["N"], named_args["K"]
    kept = [c for c in configs
            if c.kwargs["BLOCK_K"] <= max(32, triton.next_power_of_2(k))
            and c.kwargs["BLOCK_N"] <= max(32, triton.next_power_of_2(n))]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_K"])]


GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(8, 256, 4, 3), (16, 256, 4, 3), (16, 512, 8, 3), (32, 256, 8, 3),
                         (8, 512, 4, 4), (32, 128, 4, 4), (16, 128, 4, 4), (64, 64, 4, 4),
                         (32, 64, 4, 4), (64, 32, 4, 4)]
]
GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [
        (16, 64, 128, 4, 4), (16, 128, 128, 4, 4), (32, 128, 64, 4, 4), (64, 128, 64, 4, 3),
        (64, 128, 128, 8, 3), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 128, 32, 4, 4),
    ]
]
KEY = ["M_BUCKET", "N", "K", "BITS", "SYMMETRIC", "GRANULARITY", "GROUP"]
# Short autotuning samples: a sweep tunes once per M bucket, shape and format, and the harness
# times the chosen config properly afterwards.
_tune_bench = functools.partial(triton.testing.do_bench, warmup=5, rep=25)
qgemv_tuned = triton.autotune(GEMV_CONFIGS, key=KEY, prune_configs_by={"early_config_prune": _prune},
                              do_bench=_tune_bench)(qgemv_kernel)
qgemm_tuned = triton.autotune(GEMM_CONFIGS, key=KEY + ["IEEE"], prune_configs_by={"early_config_prune": _prune},
                              do_bench=_tune_bench)(qgemm_kernel)


def _m_bucket(m: int) -> int:
    return min(triton.next_power_of_2(m), 4096)


def qmatmul(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """y[M, N] = x[M, K] @ dequantize(q)^T in x's dtype, the dequantization fused into the matmul.

    x: float32/float16/bfloat16 [M, K], unit stride along K; q: a QuantizedTensor of W [N, K]
    (codes packed along K as written by ``quantize``). float32 x is multiplied in full float32
    (no TF32).
    """
    check_matrix("x", x)
    _check_quantized(q, on_kernel_device=True)
    check_same_device(x=x, codes=q.codes)
    n, k = q.shape
    m = x.shape[0]
    if x.shape[1] != k:
        raise ValueError(f"x must be [M, K] with K = {k} (the weight's K), got {list(x.shape)}")
    spec = q.spec
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    zeros = q.scales if q.zeros is None else q.zeros
    args = (x, q.codes, q.scales, zeros, y, m, n, k, x.stride(0), q.codes.stride(0), q.scales.stride(0),
            y.stride(0), _m_bucket(m))
    fmt = dict(BITS=spec.bits, OFFSET=spec.offset, SYMMETRIC=spec.symmetric,
               GRANULARITY=GRANULARITY_IDS[spec.granularity], GROUP=spec.group_size or 1)
    if m <= GEMV_MAX_M:
        block_m = triton.next_power_of_2(m)
        if interpreting():
            qgemv_kernel[(triton.cdiv(n, 16),)](*args, **fmt, BLOCK_M=block_m, BLOCK_N=16, BLOCK_K=64)
        else:
            qgemv_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **fmt, BLOCK_M=block_m)
    else:
        ieee = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and interpreting())
        if interpreting():
            qgemm_kernel[(triton.cdiv(m, 16) * triton.cdiv(n, 32),)](
                *args, **fmt, IEEE=ieee, BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
        else:
            grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
            qgemm_tuned[grid](*args, **fmt, IEEE=ieee)
    return y


def qmatmul_ref(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """PyTorch reference with the same contract: the seed notebook's forward pass, dequantize with
    the reference, then matmul (x @ W_hat^T), in x's dtype."""
    check_matrix("x", x, on_kernel_device=False)
    if x.shape[1] != q.shape[1]:
        raise ValueError(f"x must be [M, K] with K = {q.shape[1]} (the weight's K), got {list(x.shape)}")
    return torch.matmul(x, dequantize_ref(q, x.dtype).t())
