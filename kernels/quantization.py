"""Quantize a weight matrix to packed low-bit codes: Triton kernel, launcher and PyTorch reference.

The format (schemes, granularities, packing order, degenerate ranges, non-finite values) is written
once, in ``spec.py``; ``quantize`` and ``quantize_ref`` both follow it and produce identical codes.

NaN needs care on both sides: ``tl.min``/``tl.max`` drop NaN on the GPU (but not in the
interpreter, which reduces with numpy), where ``torch.amin``/``amax`` propagate it. The kernel
therefore never lets a NaN reach a reduction: it counts it as -inf for the minimum and +inf for
the maximum (``minmax_operands``), so a NaN, like an infinity, makes the segment's range infinite
and its scale is poisoned to NaN on both sides (spec.py, "Non-finite values").
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import check_matrix, check_spec
from .codebooks import code_table
from .dequantization import segment_scales
from .exact_math import ON_GPU, round_to
from .launching import Launcher
from .references import qparams_ref, quantize_ref, refuse_poisoned_segments  # noqa: F401 (the reference beside its kernel)
from .quantize_codes import quantize_store, segment_columns
from .quantize_tiles import quantize_plan
from .scale_codes import double_quantize_scales
from .spec import QuantizedTensor, QuantSpec, empty_scales

@triton.jit
def minmax_operands(x, mask):
    """(operand for the minimum, operand for the maximum) of a float32 tile: elements outside
    `mask` (None: the whole tile is inside) are +inf / -inf, and a NaN is -inf / +inf, so that it
    poisons its segment's range whether or not the reduction would have dropped it."""
    is_nan = x != x
    for_min = tl.where(is_nan, float("-inf"), x)
    for_max = tl.where(is_nan, float("inf"), x)
    if mask is not None:
        for_min = tl.where(mask, for_min, float("inf"))
        for_max = tl.where(mask, for_max, float("-inf"))
    return for_min, for_max


@triton.jit
def min_keeping_nan(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def max_keeping_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def segment_range(x, mask):
    """(min, max) [BLOCK_N, NG] of each segment of the tile x [BLOCK_N, NG, C, CHUNK] (float32, or
    the loaded float16; segment_columns) over the elements in `mask` (None: all of them); a NaN
    or an infinity makes the range infinite or NaN (qparams poisons it).

    On the GPU a NaN is kept by the reductions themselves (min.NaN and max.NaN: one instruction an
    element each); the interpreter's reductions differ on NaN, so there minmax_operands stands in
    for it (a NaN counts as -inf for the minimum and +inf for the maximum)."""
    if ON_GPU:
        if mask is None:
            for_min = x
            for_max = x
        else:
            for_min = tl.where(mask, x, float("inf"))
            for_max = tl.where(mask, x, float("-inf"))
        # the chunks (axis 2) first: a thread holds its segment's chunks, while the chunk's own
        # axis spans lanes, so the shuffles then carry one value a segment, not one a chunk (in
        # the other order, 42 SHFL and ~100 PRMT/LOP3 to pack halves for them in int4 g128's SASS)
        lo = tl.reduce(tl.reduce(for_min, 2, min_keeping_nan), 2, min_keeping_nan)
        hi = tl.reduce(tl.reduce(for_max, 2, max_keeping_nan), 2, max_keeping_nan)
    else:
        for_min, for_max = minmax_operands(x, mask)
        lo = tl.min(tl.min(for_min, axis=3), axis=2)
        hi = tl.max(tl.max(for_max, axis=3), axis=2)
    return lo, hi


@triton.jit
def qparams(lo, hi, scale_ty: tl.constexpr, QMAX: tl.constexpr, SYMMETRIC: tl.constexpr):
    """Stored scale and zero (as float32) from a segment's min and max; see spec.py.

    A scale that is not finite (an infinite element, a NaN, or a range wider than float32) poisons
    the segment: scale and zero are NaN (lo and hi may be NaN: segment_range).
    """
    if SYMMETRIC:
        span = tl.maximum(-lo, hi, propagate_nan=tl.PropagateNan.ALL)
    else:
        span = hi - lo
    scale = round_to(tl.div_rn(span, tl.full(span.shape, QMAX, tl.float32)), scale_ty)
    finite = tl.abs(scale) < float("inf")  # False for +-inf and for NaN (inf - inf)
    scale = tl.where(scale == 0.0, 1.0, scale)
    scale = tl.where(finite, scale, float("nan"))
    zero = tl.where(finite, round_to(lo, scale_ty), float("nan"))
    return scale, zero


@triton.jit
def minmax_partials_kernel(x_ptr, lo_ptr, hi_ptr, N, K, stride_xn,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """First pass of per-tensor quantization: each program writes the min and max of its tile.
    Grid: (cdiv(K, BLOCK_K), cdiv(N, BLOCK_N))."""
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < N) & (cols[None, :] < K)
    x = tl.load(x_ptr + rows[:, None] * stride_xn + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    pid = pid_n * tl.num_programs(0) + pid_k
    for_min, for_max = minmax_operands(x, mask)
    tl.store(lo_ptr + pid, tl.min(for_min))
    tl.store(hi_ptr + pid, tl.max(for_max))


@triton.jit
def tensor_qparams_kernel(lo_ptr, hi_ptr, n_partials, scales_ptr, zeros_ptr,
                          QMAX: tl.constexpr, SYMMETRIC: tl.constexpr, BLOCK: tl.constexpr):
    """Second pass of per-tensor quantization: one program reduces the partial minima and maxima
    and writes the tensor's stored scale (and zero)."""
    offs = tl.arange(0, BLOCK)
    lo = tl.full((BLOCK,), float("inf"), tl.float32)
    hi = tl.full((BLOCK,), float("-inf"), tl.float32)
    for p in range(0, n_partials, BLOCK):
        m = p + offs < n_partials
        lo = tl.minimum(lo, tl.load(lo_ptr + p + offs, mask=m, other=float("inf")))
        hi = tl.maximum(hi, tl.load(hi_ptr + p + offs, mask=m, other=float("-inf")))
    lo_all = tl.full((1,), 0.0, tl.float32) + tl.min(lo)
    hi_all = tl.full((1,), 0.0, tl.float32) + tl.max(hi)
    scale, zero = qparams(lo_all, hi_all, scales_ptr.dtype.element_ty, QMAX, SYMMETRIC)
    tl.store(scales_ptr + tl.arange(0, 1), scale)
    if not SYMMETRIC:
        tl.store(zeros_ptr + tl.arange(0, 1), zero)


@triton.jit
def quantize_kernel(x_ptr, codes_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, N, K, stride_xn,
                    stride_cn, stride_sn, stride_sg, BITS: tl.constexpr, QMIN: tl.constexpr, QMAX: tl.constexpr,
                    SYMMETRIC: tl.constexpr, CODE: tl.constexpr, MODE: tl.constexpr, GROUP: tl.constexpr,
                    CHUNK: tl.constexpr, STORE_CODES: tl.constexpr, EVEN: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, SCALE_DTYPE: tl.constexpr = 0):
    """Quantize x[N, K] (fp32/fp16/bf16, unit stride along K) into packed uint8 codes.

    Grid: (cdiv(K, BLOCK_K), cdiv(N, BLOCK_N)); consecutive programs walk along a row block.
    A tile is held as [BLOCK_N, NG, C, CHUNK] (segment_columns): NG = BLOCK_K // GROUP segments
    of a row, each as C = GROUP // CHUNK chunks. Triton gives threads the contiguous axis first,
    then rows and segments, the chunks last, so a thread holds C vectors of one segment and works
    out its segment's range, scale and zero once (with [BLOCK_N, NG, GROUP], every thread holding
    8 elements of a segment of 128 repeated its reduction, reciprocal and parameters: 29
    instructions an element in the sm_90 SASS of int4 g128, 18-22 with chunks of 16-32).
    MODE 2 (groups in a tile; per-group scales, or per-channel ones when a row fits in BLOCK_K):
    BLOCK_K a multiple of GROUP; each segment's min and max make its scale and zero.
    MODE 1 (per-channel scales, rows longer than BLOCK_K): the grid has one column of programs;
    each loops over its rows twice, a min/max pass and a quantize pass that re-reads the rows from
    cache. GROUP == CHUNK == BLOCK_K.
    MODE 0 (per-tensor): the scale and zero were written by tensor_qparams_kernel and are read
    here. GROUP == CHUNK == BLOCK_K.
    MODE 3 (nf4_dq's second pass): as MODE 2, the scales read, not made: nf4_dq's 8-bit scale codes
    at scales_ptr, decoded here into SCALE_DTYPE (prepared.SCALE_DTYPE_IDS) with the chunk scales
    at second_ptr and the mean at mean_ptr (dequantization.segment_scales; stand-ins otherwise).
    CODE: what a field is (quantize_tile); table_ptr: NF4's encode table (CODE 1).
    STORE_CODES False: write the scales only (the first pass of nf4_dq, into float32 scales).
    EVEN: N and K are multiples of BLOCK_N and BLOCK_K (MODE 0, 2, 3: the tiles need no mask).
    Scales (and zeros, asymmetric only, with the scales' strides) are written in scales_ptr's dtype
    at [row * stride_sn + group * stride_sg] (quantize's group-major pairs: stride_sn 2, stride_sg
    2N); nf4_dq's scale codes are contiguous [N, groups]; codes at [row * stride_cn + k * BITS // 8]. CHUNK must be a
    multiple of 8 // BITS, so that no byte is shared between chunks.
    """
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    NG: tl.constexpr = BLOCK_K // GROUP
    C: tl.constexpr = GROUP // CHUNK
    scale_ty: tl.constexpr = scales_ptr.dtype.element_ty
    # float16 scales lie in [2**-24, 65504]: divide() needs no range check
    SAFE_RANGE: tl.constexpr = scale_ty == tl.float16
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    x_rows = x_ptr + rows[:, None, None, None] * stride_xn

    if MODE == 1:
        lo = tl.full((BLOCK_N, 1), float("inf"), tl.float32)
        hi = tl.full((BLOCK_N, 1), float("-inf"), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = segment_columns(k0, 1, 1, BLOCK_K, BLOCK_K)
            mask = row_ok[:, None, None, None] & (cols < K)
            x = tl.load(x_rows + cols, mask=mask, other=0.0).to(tl.float32)
            tile_lo, tile_hi = segment_range(x, mask)
            lo = min_keeping_nan(lo, tile_lo)
            hi = max_keeping_nan(hi, tile_hi)
        lo = tl.where(row_ok[:, None], lo, 0.0)  # rows past N: keep their (unstored) parameters finite
        hi = tl.where(row_ok[:, None], hi, 0.0)
        scale, zero = qparams(lo, hi, scales_ptr.dtype.element_ty, QMAX, SYMMETRIC)
        s_off = rows[:, None] * stride_sn + tl.arange(0, 1)[None, :]
        tl.store(scales_ptr + s_off, scale, mask=row_ok[:, None])
        if not SYMMETRIC:
            tl.store(zeros_ptr + s_off, zero, mask=row_ok[:, None])
        for k0 in range(0, K, BLOCK_K):
            cols = segment_columns(k0, 1, 1, BLOCK_K, BLOCK_K)
            mask = row_ok[:, None, None, None] & (cols < K)
            x = tl.load(x_rows + cols, mask=mask, other=0.0).to(tl.float32)
            quantize_store(codes_ptr, table_ptr, x, scale, zero, rows, N, k0, K, mask, stride_cn,
                           BITS, QMIN, QMAX, SYMMETRIC, CODE, SAFE_RANGE, BLOCK_K, BLOCK_K, BLOCK_N, 1, scale_ty)
    else:
        k0 = pid_k * BLOCK_K
        cols = segment_columns(k0, NG, C, CHUNK, GROUP)
        if EVEN:
            mask = None
            x_in = tl.load(x_rows + cols)
        else:
            mask = row_ok[:, None, None, None] & (cols < K)
            x_in = tl.load(x_rows + cols, mask=mask, other=0.0)
        x = x_in.to(tl.float32)
        groups = pid_k * NG + tl.arange(0, NG)
        g_mask = row_ok[:, None] & (groups[None, :] < tl.cdiv(K, GROUP))
        if MODE == 0:
            scale = tl.zeros((BLOCK_N, NG), tl.float32) + tl.load(scales_ptr).to(tl.float32)
            if SYMMETRIC:
                zero = tl.zeros((BLOCK_N, NG), tl.float32)
            else:
                zero = tl.zeros((BLOCK_N, NG), tl.float32) + tl.load(zeros_ptr).to(tl.float32)
        elif MODE == 3:
            flat = rows[:, None] * stride_sn + groups[None, :]  # the scale codes are contiguous [N, groups]
            scale = segment_scales(scales_ptr, second_ptr, mean_ptr, flat, flat, g_mask, True, SCALE_DTYPE)
            zero = tl.zeros((BLOCK_N, NG), tl.float32)
        else:
            # float16 ranges are taken on the loaded halves, two to an instruction (exact; the
            # float32 conversion of the result is too), others on the float32 tile
            lo, hi = segment_range(x_in if x_in.dtype == tl.float16 else x, mask)
            lo = tl.where(g_mask, lo.to(tl.float32), 0.0)  # groups past the matrix: keep them finite, never stored
            hi = tl.where(g_mask, hi.to(tl.float32), 0.0)
            scale, zero = qparams(lo, hi, scales_ptr.dtype.element_ty, QMAX, SYMMETRIC)
            s_off = rows[:, None] * stride_sn + groups[None, :] * stride_sg
            tl.store(scales_ptr + s_off, scale, mask=g_mask)
            if not SYMMETRIC:
                tl.store(zeros_ptr + s_off, zero, mask=g_mask)
        if STORE_CODES:
            quantize_store(codes_ptr, table_ptr, x, scale, zero, rows, N, k0, K, mask, stride_cn,
                           BITS, QMIN, QMAX, SYMMETRIC, CODE, SAFE_RANGE, GROUP, CHUNK, BLOCK_N, NG, scale_ty)


_minmax_launch = Launcher(minmax_partials_kernel)
_qparams_launch = Launcher(tensor_qparams_kernel)
_quantize_launch = Launcher(quantize_kernel)
_ONE_PROGRAM = lambda meta: (1,)  # tensor_qparams_kernel's grid


def quantize(w: torch.Tensor, spec: QuantSpec, *, check_finite: bool = False) -> QuantizedTensor:
    """Quantize w[N, K] (float32/float16/bfloat16, unit stride along K) with the Triton kernel.

    Returns codes uint8 [N, ceil(K * bits / 8)], scales and zeros (asymmetric only) in w's dtype,
    shaped as ``spec.scales_shape(N, K)``; asymmetric per-group ones of float16 and bfloat16 as
    group-major scale+zero pairs (spec.scale_zero_pairs), others row-major. The format is
    documented in spec.py.

    A segment holding NaN or +-Inf (or, float32/bfloat16 only, a range wider than float32) gets a
    NaN scale (and zero) and zero codes; the rest of w quantizes as usual. ``check_finite=True``
    raises a ValueError naming the first such segment instead. Its cost: one read of the scales
    (N * K / group_size elements, 1/32 of w at most) and one device-to-host sync, which is why it is
    off by default (a sync in a timed loop or a CUDA graph capture is not free or not allowed).
    """
    check_matrix("w", w)
    check_spec(spec)
    n, k = w.shape
    row_stride = w.stride(0)
    plan = quantize_plan(spec, n, k, w.dtype, row_stride)  # the format's shape checks, on a shape's first call
    device = w.device
    codes = torch.empty((n, plan.packed_cols), dtype=torch.uint8, device=device)
    # nf4_dq: a first pass writes the float32 absmax scales, which are double-quantized
    # (scale_codes.py), then the codes pass decodes them as it goes
    scales, zeros = empty_scales(spec, n, k, plan.scale_dtype, device)
    zeros_arg = scales if zeros is None else zeros  # never written when symmetric
    table = code_table(spec, device, decode=False)
    key = (plan.token, w.data_ptr() % 16 == 0)  # the rest of every argument's signature is the plan's
    if plan.partials:
        lo = torch.empty(plan.partials, dtype=torch.float32, device=device)
        hi = torch.empty_like(lo)
        _minmax_launch(plan.grid, (w, lo, hi, n, k, row_stride), plan.minmax_constants, key)
        _qparams_launch(_ONE_PROGRAM, (lo, hi, plan.partials, scales, zeros_arg), plan.qparams_constants, plan.token)
    # the scales, and the codes but for nf4_dq; second_ptr and mean_ptr are stand-ins (scales) outside MODE 3
    _quantize_launch(plan.grid, (w, codes, scales, zeros_arg, table, scales, scales, n, k, row_stride, codes.stride(0),
                                 scales.stride(0), scales.stride(1)), plan.constants, key)
    second = None
    if plan.codes_constants is not None:
        scales, second = double_quantize_scales(scales, w.dtype)
        _quantize_launch(plan.grid, (w, codes, scales, scales, table, second.chunk_scales, second.mean, n, k,
                                     row_stride, codes.stride(0), scales.stride(0), scales.stride(1)),
                         plan.codes_constants, key + (3,))
    q = QuantizedTensor(codes, scales, zeros, spec, (n, k), second)
    if check_finite:
        refuse_poisoned_segments("w", w, q)
    return q
