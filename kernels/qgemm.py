"""The quantized matmul's tiled GEMM (quantized_matmul.py chooses it by M, autotunes and launches
it): y^T tiles = W_hat x^T with tl.dot, the weight dequantized inside the K loop."""

from __future__ import annotations

import triton
import triton.language as tl

from .dequantization import (apply_params, dequant_tile, field_values, load_packed, row_params, tile_params,
                             unpack_tile)
from .scale_words import load_scale_zero_words
from .exact_math import ON_GPU
from .field_ptx import half_fields
from .split_k import finish_tile


@triton.jit
def byte_fields(x_tile, BLOCK_M: tl.constexpr, BYTES: tl.constexpr, PER_BYTE: tl.constexpr):
    """x_tile [BLOCK_M, BYTES * PER_BYTE] dealt into PER_BYTE (2 or 4) tensors [BLOCK_M, BYTES]:
    the j-th holds columns j, j + PER_BYTE, ..., those of field j of each byte of a weight row."""
    if PER_BYTE == 2:
        return tl.split(tl.reshape(x_tile, (BLOCK_M, BYTES, 2)))
    else:
        # column 4b + 2c + d at [b, c, d]: split d first, then c
        even, odd = tl.split(tl.reshape(x_tile, (BLOCK_M, BYTES, 2, 2)))
        f0, f2 = tl.split(even)
        f1, f3 = tl.split(odd)
        return f0, f1, f2, f3


@triton.jit
def scale_zero_params(words_ptr, rows, k0, N, K, stride_sn, stride_sg, GROUP: tl.constexpr, NG: tl.constexpr,
                      SCALE_DTYPE: tl.constexpr, EVEN: tl.constexpr):
    """(scale, zero), float32 [len(rows), NG], of the NG groups from column k0 of each row (NG = 1:
    the group holding k0), read from the scale+zero words of prepared.ScaleArgs (row r, group g at
    words_ptr + r * stride_sn + g * stride_sg; group-major, stride_sn 1 and stride_sg N). One 4-byte
    load gives both, and along a tile's rows the words are contiguous: on an H200, int4 g128 at
    8192^2 (kernels/NOTES.md, session 20), the split-K GEMM 26.0 -> 22.6 us at M = 16 and
    46.9 -> 41.1 at M = 64 against row-major scales and zeros read two groups to a word. EVEN: no
    masks needed."""
    groups = k0 // GROUP + tl.arange(0, NG)
    offs = rows[:, None] * stride_sn + groups[None, :] * stride_sg
    mask = (rows < N)[:, None] & (groups < tl.cdiv(K, GROUP))[None, :]
    return load_scale_zero_words(words_ptr, offs, mask, SCALE_DTYPE, EVEN)


@triton.jit
def qgemm_kernel(x_ptr, codes_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, y_ptr, partials_ptr,
                 tickets_ptr, M, N, K, stride_xm, stride_cn, stride_sn, stride_sg, stride_ym, M_BUCKET,
                 BITS: tl.constexpr, OFFSET: tl.constexpr, CODE: tl.constexpr, SYMMETRIC: tl.constexpr,
                 GRANULARITY: tl.constexpr, GROUP: tl.constexpr, DQ: tl.constexpr, SCALE_DTYPE: tl.constexpr,
                 IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
                 SCALE_ZERO_WORDS: tl.constexpr = False, EVEN_N: tl.constexpr = False, EVEN_K: tl.constexpr = False):
    """y[M, N] = x[M, K] @ W_hat^T with tl.dot, computed as y^T tiles [BLOCK_N, BLOCK_M] = W_hat x^T.

    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), SPLIT_K), programs ordered in GROUP_M-row bands so
    that neighbouring programs share weight tiles in L2. partials and tickets: see finish_tile
    (unused when SPLIT_K is 1).
    Each weight tile is dequantized to x's dtype inside the K loop, except with symmetric
    per-channel or per-tensor scales: then the integer codes or e4m3 values (exact in fp16 and
    bf16) go into the dot and the scale is applied once, in the epilogue. (The asymmetric form, s (q . x) + z sum(x)
    with sum(x) taken from the x tile that also feeds the dot, gave wrong outputs, relative error
    near 1, on an H100 with Triton 3.6 for some tile shapes (e.g. 128 x 128 x 64, 8 warps, 3
    stages) and right ones for others; not isolated further, so the zero goes into the tile.)
    IEEE: both operands in float32, multiplied without TF32 (float32 activations; bfloat16 under
    the interpreter, whose dot reads bfloat16's raw bits as integers).
    Sub-byte codes (4 and 2 bits) take one dot per field of the bytes: field j of byte b is column
    k0 + PER_BYTE * b + j, so its tile [BLOCK_N, BYTES] meets x's columns j, j + PER_BYTE, ...
    (byte_fields), and the fields are never interleaved into one [BLOCK_N, BLOCK_K] tile by
    tl.join and a reshape. Where the scales are in x's dtype (HALF_FIELDS, on the GPU), the fields
    are dequantized in that dtype two to an instruction (half_fields). Together (kernels/NOTES.md,
    session 14): the split-K K loop 10.1 -> 4.8 instructions an element in sm_90 SASS, and on an
    H200 int4 g128 at M = 16, N = K = 8192, 52.1 -> 34.7 us. EVEN_N / EVEN_K: the weight's tiles
    need no mask.
    Per-group scales and zeros at row * stride_sn + group * stride_sg, as tile_params reads them
    (qmatmul passes 4- and 2-bit ones group-major: prepared.gemm_scales); with SCALE_ZERO_WORDS
    (asymmetric 4- and 2-bit codes), a scale and its zero in one int32 word there (scale_zero_params).
    """
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_n = tl.cdiv(N, BLOCK_N)
    # GROUP_M-row bands, column-major within a band (Triton's grouped ordering)
    pid_m, pid_n = tl.swizzle2d(pid // num_n, pid % num_n, tl.cdiv(M, BLOCK_M), num_n, GROUP_M)
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = pid_k * k_per_split
    k_hi = min(K, k_lo + k_per_split)

    rows_x = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_w = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # symmetric per-channel or per-tensor: integer codes in the dot, one scale per output column
    EPILOGUE_SCALE: tl.constexpr = SYMMETRIC and GRANULARITY != 2
    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    PER_BYTE: tl.constexpr = 8 // BITS
    BYTES: tl.constexpr = BLOCK_K // PER_BYTE
    NG: tl.constexpr = BLOCK_K // GROUP if GRANULARITY == 2 and BLOCK_K > GROUP else 1
    X_DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    # integer fields dequantized in half precision, where the scales are stored in x's dtype (so
    # exactly what they are) and the dot takes x's dtype: rounded once to that dtype, where the
    # float32 route rounds to float32 and then to x's dtype
    SCALES_IN_X_DTYPE: tl.constexpr = (
        ((SCALE_DTYPE == 1 and X_DTYPE == tl.float16) or (SCALE_DTYPE == 2 and X_DTYPE == tl.bfloat16))
        if SCALE_ZERO_WORDS else
        (scales_ptr.dtype.element_ty == X_DTYPE and zeros_ptr.dtype.element_ty == X_DTYPE))
    HALF_FIELDS: tl.constexpr = ON_GPU and not IEEE and CODE == 0 and PER_BYTE > 1 and SCALES_IN_X_DTYPE
    tl.static_assert(not SCALE_ZERO_WORDS or (PER_BYTE > 1 and GRANULARITY == 2 and not SYMMETRIC and not DQ))
    # per tensor and per channel: the same scale and zero for every tile of the K loop, read once
    LOOP_PARAMS: tl.constexpr = PER_BYTE > 1 and not EPILOGUE_SCALE and GRANULARITY != 2
    if LOOP_PARAMS:
        row_scale, row_zero = tile_params(scales_ptr, zeros_ptr, second_ptr, mean_ptr, rows_w, k_lo, N, K, stride_sn,
                                          stride_sg, SYMMETRIC, GRANULARITY, GROUP, DQ, SCALE_DTYPE, BLOCK_N, BLOCK_K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        if PER_BYTE > 1:
            # one dot per field of the bytes (see the docstring)
            packed = load_packed(codes_ptr, rows_w, k0, N, K, stride_cn, BITS, BLOCK_N, BLOCK_K, EVEN_N and EVEN_K)
            # x's tile read whole (row-major, vector loads), its columns dealt to the fields in registers
            cols = k0 + tl.arange(0, BLOCK_K)
            x_tile = tl.load(x_ptr + rows_x[:, None] * stride_xm + cols[None, :],
                             mask=(rows_x[:, None] < M) & (cols[None, :] < K), other=0.0)
            x_fields = byte_fields(x_tile, BLOCK_M, BYTES, PER_BYTE)
            if EPILOGUE_SCALE:
                scale = tl.full((BLOCK_N, 1), 1.0, tl.float32)
                zero = tl.zeros((BLOCK_N, 1), tl.float32)
            elif SCALE_ZERO_WORDS:
                scale, zero = scale_zero_params(scales_ptr, rows_w, k0, N, K, stride_sn, stride_sg, GROUP, NG,
                                                SCALE_DTYPE, EVEN_N and EVEN_K)
                if HALF_FIELDS:
                    scale, zero = scale.to(X_DTYPE), zero.to(X_DTYPE)  # exact: they were X_DTYPE's
            elif LOOP_PARAMS:
                scale, zero = row_scale, row_zero
            else:
                scale, zero = tile_params(scales_ptr, zeros_ptr, second_ptr, mean_ptr, rows_w, k0, N, K, stride_sn,
                                          stride_sg, SYMMETRIC, GRANULARITY, GROUP, DQ, SCALE_DTYPE, BLOCK_N, BLOCK_K)
            if HALF_FIELDS:
                # every field of the tile dequantized in x's dtype, two to an instruction (half_fields)
                if NG == 1:
                    halves = half_fields(packed, scale, zero, OFFSET, BITS, X_DTYPE)
                else:
                    halves = half_fields(tl.reshape(packed, (BLOCK_N, NG, BYTES // NG)), scale[:, :, None],
                                         zero[:, :, None], OFFSET, BITS, X_DTYPE)
            for j in tl.static_range(PER_BYTE):
                xt = tl.trans(x_fields[j])
                if HALF_FIELDS:
                    w = tl.reshape(halves[j], (BLOCK_N, BYTES))
                else:
                    w = field_values((packed.to(tl.int32) >> (j * BITS)) & ((1 << BITS) - 1), table_ptr, OFFSET,
                                     CODE)
                    w = apply_params(w, scale, zero, SYMMETRIC, BLOCK_N, BYTES, NG)
                if IEEE:
                    acc = tl.dot(w, xt.to(tl.float32), acc, input_precision="ieee")
                else:
                    acc = tl.dot(w.to(xt.dtype), xt, acc)
        else:
            cols = k0 + tl.arange(0, BLOCK_K)
            # x^T tile [BLOCK_K, BLOCK_M], read straight from row-major x
            xt = tl.load(x_ptr + rows_x[None, :] * stride_xm + cols[:, None],
                         mask=(rows_x[None, :] < M) & (cols[:, None] < K), other=0.0)
            # columns past K meet zeros of x; their weights are finite (codes read as 0, scales as 1)
            if EPILOGUE_SCALE:
                w = unpack_tile(codes_ptr, table_ptr, rows_w, k0, N, K, stride_cn, BITS, OFFSET, CODE, BLOCK_N,
                                BLOCK_K)
            else:
                w = dequant_tile(codes_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, rows_w, k0, N, K,
                                 stride_cn, stride_sn, stride_sg, BITS, OFFSET, CODE, SYMMETRIC, GRANULARITY, GROUP,
                                 DQ, SCALE_DTYPE, BLOCK_N, BLOCK_K)
            if IEEE:
                acc = tl.dot(w, xt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(w.to(xt.dtype), xt, acc)
    if EPILOGUE_SCALE:
        scale, _ = row_params(scales_ptr, zeros_ptr, rows_w * (GRANULARITY == 1), N, stride_sn, 0, True)
        acc = acc * scale[:, None]
    finish_tile(y_ptr, partials_ptr, tickets_ptr, pid, tl.trans(acc), rows_x, rows_w, M, N, stride_ym, SPLIT_K)
