"""W8A8: int8 activations x int8 weights, int32 accumulation, scales applied in the epilogue.

    y[M, N] = (xq[M, K] @ wq[N, K]^T) * sx[M] * sw[N]

Activations are quantized per token (row) on the fly, symmetric int8: ``sx = max|x| / 127``,
``xq = round(x / sx)`` (half to even) clamped to [-127, 127], with the same degenerate-range rule
as spec.py (an all-zero row gets scale 1) and the same non-finite rule (a row holding NaN or +-Inf
gets scale NaN and codes 0, so its output row is NaN; the other rows are unaffected). Weights are
a symmetric 8-bit per-channel QuantizedTensor; ``pack_weights`` turns its offset-binary codes into
the int8 [N, K] matrix (row major, K contiguous) and float32 per-channel scales that the GEMM
reads, once, outside the timed call, as weight-loading code would.
"""

from __future__ import annotations

import weakref

import torch
import triton
import triton.language as tl

from .checks import cdiv, check_matrix, check_same_device, inner_dim_error, next_power_of_2
from .exact_math import round_half_even
from .launching import INTERPRETED, Launcher, signature
from .references import check_quantized, qparams_ref
from .spec import QuantizedTensor, QuantSpec
from .tuning import tuning_bench

TOKEN_BLOCK_K = 1024
TOKEN_SPEC = QuantSpec(8, "symmetric", "channel")  # one scale per token (row of x)


@triton.jit
def quantize_tokens_kernel(x_ptr, xq_ptr, sx_ptr, M, K, stride_xm, stride_qm, BLOCK_K: tl.constexpr):
    """One program per row of x [M, K]: its absmax (a first pass over K), then the int8 codes.
    Grid: (M,). A NaN counts as +inf in the absmax (tl.maximum may drop NaN), so a row with a NaN
    or an infinity gets scale NaN and codes 0, as in the reference."""
    row = tl.program_id(0)
    amax = tl.zeros((BLOCK_K,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + row * stride_xm + cols, mask=cols < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.where(x == x, tl.abs(x), float("inf")))
    scale = tl.div_rn(tl.max(amax, axis=0), 127.0)
    scale = tl.where(scale == 0.0, 1.0, scale)
    scale = tl.where(scale < float("inf"), scale, float("nan"))
    tl.store(sx_ptr + row, scale)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + row * stride_xm + cols, mask=cols < K, other=0.0).to(tl.float32)
        v = tl.div_rn(x, scale)
        v = tl.where(v == v, v, 0.0)  # NaN only in a poisoned row: code 0
        q = round_half_even(tl.minimum(tl.maximum(v, -127.0), 127.0))
        tl.store(xq_ptr + row * stride_qm + cols, q.to(tl.int8), mask=cols < K)


@triton.jit
def int8_gemm_kernel(a_ptr, b_ptr, sa_ptr, sb_ptr, y_ptr, M, N, K, stride_am, stride_bn, stride_ym,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    """y[M, N] = (a[M, K] @ b[N, K]^T) * sa[M] * sb[N]: int8 operands, int32 tl.dot accumulation,
    float32 epilogue, y in its own dtype. Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), programs
    ordered in GROUP_M-row bands."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    # GROUP_M-row bands, column-major within a band (Triton's grouped ordering)
    pid_m, pid_n = tl.swizzle2d(pid // num_n, pid % num_n, tl.cdiv(M, BLOCK_M), num_n, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0)
        b = tl.load(b_ptr + rn[:, None] * stride_bn + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K), other=0)
        acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.int32)
    sa = tl.load(sa_ptr + rm, mask=rm < M, other=0.0)
    sb = tl.load(sb_ptr + rn, mask=rn < N, other=0.0)
    y = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], y.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(16, 64, 128, 4, 4), (64, 128, 128, 4, 4), (128, 128, 128, 8, 3),
                             (128, 256, 128, 8, 3), (256, 128, 128, 8, 3)]
]
int8_gemm_tuned = triton.autotune(GEMM_CONFIGS, key=["M", "N", "K"], do_bench=tuning_bench)(int8_gemm_kernel)
# both of a W8A8 call's kernels launched directly after the first call of a shape (launching.py)
_tokens_launch = Launcher(quantize_tokens_kernel)
_int8_gemm_launch = Launcher(int8_gemm_tuned)


def pack_weights(q: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 [N, K] codes and float32 [N] scales of a symmetric 8-bit per-channel weight."""
    check_quantized(q, on_kernel_device=False)
    spec = q.spec
    if (spec.bits, spec.scheme, spec.granularity) != (8, "symmetric", "channel"):
        raise ValueError(f"W8A8 takes a symmetric 8-bit per-channel weight, got {spec.bits}-bit "
                         f"{spec.scheme} per {spec.granularity}")
    codes = (q.codes.to(torch.int16) - spec.offset).to(torch.int8).contiguous()
    return codes, q.scales.float().flatten().contiguous()


def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8 quantization of x [M, K] with the Triton kernel: (xq, sx)."""
    check_matrix("x", x)
    return _quantize_tokens(x)


def _quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_tokens on an x already checked."""
    m, k = x.shape
    xq = torch.empty((m, k), dtype=torch.int8, device=x.device)
    sx = torch.empty(m, dtype=torch.float32, device=x.device)
    block_k = min(TOKEN_BLOCK_K, next_power_of_2(k))
    # the launch key without walking the arguments: xq and sx are new from the allocator (16-byte
    # aligned, int8 and float32), xq's row stride is k, and BLOCK_K follows from k
    key = (x.dtype, x.data_ptr() % 16 == 0, m, k, x.stride(0))
    _tokens_launch(lambda meta: (m,), (x, xq, sx, m, k, x.stride(0), xq.stride(0)), {"BLOCK_K": block_k}, key)
    return xq, sx


def quantize_tokens_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch reference for quantize_tokens, same contract and identical codes."""
    check_matrix("x", x, on_kernel_device=False, unit_stride=False)
    xf = x.float()
    # the format's own scale rule (absmax / 127, 1 for an all-zero token), kept in float32
    sx, _ = qparams_ref(xf.amin(dim=1), xf.amax(dim=1), TOKEN_SPEC, torch.float32)
    v = xf / sx[:, None]
    xq = torch.where(torch.isnan(v), 0.0, v).clamp(-127, 127).round().to(torch.int8)  # poisoned row: 0
    return xq, sx


def w8a8_matmul(x: torch.Tensor, w_int8: torch.Tensor, w_scales: torch.Tensor) -> torch.Tensor:
    """y = x @ W^T in x's dtype, x quantized per token on the fly; w from pack_weights.
    The epilogue applies the two scales one after the other, (acc * sx) * sw, in float32: for
    activations near float32's largest (|x| past ~1e36) the first product can overflow to +-inf
    where the reference, in float64, gives a finite output."""
    check_matrix("x", x)
    weight_key = checked_weight(w_int8, w_scales)  # the weight pair checked on its first use
    n, k = w_int8.shape
    m = x.shape[0]
    if x.shape[1] != k:
        raise inner_dim_error(x, k)
    if x.device != w_int8.device:
        check_same_device(x=x, w_int8=w_int8)
    xq, sx = _quantize_tokens(x)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    args = (xq, w_int8, sx, w_scales, y, m, n, k, xq.stride(0), w_int8.stride(0), y.stride(0))
    if INTERPRETED:
        int8_gemm_kernel[(cdiv(m, 16) * cdiv(n, 32),)](*args, BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
    else:
        # xq, sx and y are new from the allocator (16-byte aligned); their row strides are k and n
        _int8_gemm_launch(lambda meta: (cdiv(m, meta["BLOCK_M"]) * cdiv(n, meta["BLOCK_N"]),), args, {},
                          (weight_key, x.dtype, m))
    return y


# id(w_int8) -> (weak references to the codes and the scales last checked with them, the pair's
# share of the GEMM's launch key): one entry per live codes tensor, however many scales it meets
_checked_weights: dict[int, tuple[weakref.ref, weakref.ref, tuple]] = {}


def checked_weight(w_int8: torch.Tensor, w_scales: torch.Tensor) -> tuple:
    """The weight pair's share of the int8 GEMM's launch key (its tensors' signature, N, K and row
    stride), the pair checked on its first use and remembered while w_int8 lives, as qmatmul does
    for a QuantizedTensor (prepared.py): a weight is checked once, not on every call. Other scales
    beside the same codes are checked again and replace the pair remembered."""
    entry = _checked_weights.get(id(w_int8))
    if entry is not None and entry[0]() is w_int8 and entry[1]() is w_scales:
        return entry[2]
    check_weight_pair(w_int8, w_scales, on_kernel_device=True)
    n, k = w_int8.shape
    key = (signature((w_int8, w_scales)), n, k, w_int8.stride(0))
    if entry is None or entry[0]() is not w_int8:  # the codes' first entry: dropped when they die
        weakref.finalize(w_int8, _checked_weights.pop, id(w_int8), None)
    _checked_weights[id(w_int8)] = (weakref.ref(w_int8), weakref.ref(w_scales), key)
    return key


def check_weight_pair(w_int8: torch.Tensor, w_scales: torch.Tensor, on_kernel_device: bool) -> None:
    """pack_weights' pair: int8 codes [N, K], contiguous float32 scales [N] (the GEMM reads them at
    unit stride), on one device."""
    check_matrix("w_int8", w_int8, (torch.int8,), on_kernel_device)
    n = w_int8.shape[0]
    if not isinstance(w_scales, torch.Tensor):
        raise TypeError(f"w_scales must be a torch.Tensor, got {type(w_scales).__name__}")
    if w_scales.shape != (n,) or w_scales.dtype != torch.float32:
        raise ValueError(f"w_scales must be float32 [{n}], got {w_scales.dtype} {list(w_scales.shape)}")
    if w_scales.stride(0) != 1 and n > 1:
        raise ValueError(f"w_scales must be contiguous, got stride {w_scales.stride(0)}; call .contiguous() first")
    check_same_device(w_int8=w_int8, w_scales=w_scales)


def w8a8_matmul_ref(x: torch.Tensor, w_int8: torch.Tensor, w_scales: torch.Tensor) -> torch.Tensor:
    """PyTorch reference: the same per-token quantization, an exact integer product (in float64,
    exact for these sizes), the same scales, in x's dtype."""
    check_weight_pair(w_int8, w_scales, on_kernel_device=False)
    check_matrix("x", x, on_kernel_device=False, unit_stride=False)
    if x.shape[1] != w_int8.shape[1]:
        raise inner_dim_error(x, w_int8.shape[1])
    xq, sx = quantize_tokens_ref(x)
    acc = xq.double() @ w_int8.double().t()
    return (acc * sx.double()[:, None] * w_scales.double()[None, :]).to(x.dtype)
