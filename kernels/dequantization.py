"""Dequantize packed low-bit codes back to floats: Triton kernel, launcher and PyTorch reference.

``w_hat = value(field) * scale + zero`` in float32 (value: field - offset, an NF4 level or an e4m3 value), saturated to the output dtype's finite
range, then rounded to the output dtype (zero is absent for the symmetric scheme). A NaN scale (a
poisoned segment) dequantizes to NaN. The format is documented in spec.py. On the GPU, 4- and
2-bit integer codes dequantized into the half-precision dtype of their scales are computed in
that dtype with one rounding (half_tile), which may differ from the float32 route's two by a
unit in the last place (dequant_close allows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import triton
import triton.language as tl

from .exact_math import ON_GPU, lookup, mul_rn, round_to
from .field_ptx import half_fields
from .checks import cdiv
from .launching import Launcher
from .unit_activations import split8
from .prepared import PreparedWeight, prepared, scale_versions
from .references import dequantize_ref, expand_params, out_dtype_of  # noqa: F401 (the reference beside its kernel)
from .spec import DQ_CHUNK, QuantizedTensor

DQ_CHUNK_C = tl.constexpr(DQ_CHUNK)
TILE_ELEMS = 4096  # output elements one program writes
MIN_BLOCK_K = 256
# NF4 codes (a table lookup an element, on the float32 route) in tiles of 4 x 2048 where rows are
# that long. On an H200 (kernels/NOTES.md, session 22; 8192^2 g64, us against 16 x 256): NF4
# float16 52.4 -> 49.2, nf4_dq float16 52.3 -> 50.7 and bfloat16 64.7 -> 59.6; NF4 into
# bfloat16 56.5 -> 57.0, so it keeps 16 x 256. Float32 outputs were not measured and keep it too.
NF4_TILE_N, NF4_TILE_K = 4, 2048


@triton.jit
def nf4_word_levels(words, table_ptr):
    """The NF4 levels (float32) of the 8 fields of int32 words (field j: bits 4j to 4j + 3), a
    tuple of 8 tensors shaped like words, field 0 first: all of them looked up in one call.

    The fields are joined into a [..., 2, 2, 2] tensor (field c + 2b + 4a at [..., c, b, a]), so
    that a thread holds all 8 fields of its words and tl.split hands them back without moving
    data between threads."""
    f = tl.join(tl.join(tl.join(words & 0xF, (words >> 4) & 0xF), tl.join((words >> 8) & 0xF, (words >> 12) & 0xF)),
                tl.join(tl.join((words >> 16) & 0xF, (words >> 20) & 0xF),
                        tl.join((words >> 24) & 0xF, (words >> 28) & 0xF)))
    # split8 hands back [..., a, b, c] as entry 4a + 2b + c: here field a + 2b + 4c, bit-reversed
    l0, l4, l2, l6, l1, l5, l3, l7 = split8(lookup(table_ptr, f, 16))
    return l0, l1, l2, l3, l4, l5, l6, l7


@triton.jit
def field_values(fields, table_ptr, OFFSET: tl.constexpr, CODE: tl.constexpr):
    """float32 values of int32 fields: field - OFFSET (CODE 0, integer schemes), the NF4 level
    table_ptr[field] (CODE 1), or the float8 e4m3 value of the field's bits (CODE 2).

    Integers by the exponent trick: the bits of 2^23 + field, minus 2^23 + OFFSET (exact, and
    full-rate arithmetic where an integer conversion instruction is slow). NF4 levels by a lookup
    in the 16-entry table (exact_math.lookup), called on a whole tile. e4m3 by the hardware
    conversion (sm_89 and newer; exact: every e4m3 value is a float32)."""
    if CODE == 0:
        return (fields | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + OFFSET)
    elif CODE == 1:
        return lookup(table_ptr, fields, 16)
    else:
        return fields.to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)


@triton.jit
def unpack_tile(codes_ptr, table_ptr, rows, k0, N, K, stride_cn,
                BITS: tl.constexpr, OFFSET: tl.constexpr, CODE: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VECTOR: tl.constexpr = 0):
    """Code values (field_values) of W[rows, k0 : k0 + BLOCK_K] as float32 [BLOCK_N, BLOCK_K].

    codes: uint8 [N, ceil(K * BITS / 8)], element k of a row in byte k // (8 // BITS) at bit
    offset (k % (8 // BITS)) * BITS. The tile's bytes are loaded contiguously and split into fields
    with shifts and tl.join, which keeps neighbours in one thread's registers. k0 is a multiple of
    BLOCK_K, itself a multiple of 8 // BITS; bytes past the row read as 0. VECTOR: the bytes a
    thread loads at once (0: the compiler's choice, up to 16), which sets the layout of the tile.
    """
    PER_BYTE: tl.constexpr = 8 // BITS
    byte_cols = k0 // PER_BYTE + tl.arange(0, BLOCK_K // PER_BYTE)
    if VECTOR:
        byte_cols = tl.max_contiguous(byte_cols, VECTOR)
    byte_mask = (rows < N)[:, None] & (byte_cols[None, :] < (K + PER_BYTE - 1) // PER_BYTE)
    packed = tl.load(codes_ptr + rows[:, None] * stride_cn + byte_cols[None, :], mask=byte_mask, other=0)
    packed = packed.to(tl.int32)
    if BITS == 8:
        fields = packed
    elif BITS == 4:
        fields = tl.reshape(tl.join(packed & 0xF, packed >> 4), (BLOCK_N, BLOCK_K))
    else:
        f0, f1, f2, f3 = packed & 3, (packed >> 2) & 3, (packed >> 4) & 3, packed >> 6
        # join(join(f0, f2), join(f1, f3))[..., i, j] is f(2i + j): row-major order f0 f1 f2 f3
        fields = tl.reshape(tl.join(tl.join(f0, f2), tl.join(f1, f3)), (BLOCK_N, BLOCK_K))
    return field_values(fields, table_ptr, OFFSET, CODE)


@triton.jit
def segment_scales(scales_ptr, second_ptr, mean_ptr, offs, flat, mask, DQ: tl.constexpr, SCALE_DTYPE: tl.constexpr):
    """float32 scales at scales_ptr + offs (1 where not mask). DQ (nf4_dq): uint8 scale codes there,
    decoded as codebooks.decode_scales decodes them, bit for bit: (code - 128) times the float32
    scale of the code's chunk (second_ptr[flat // DQ_CHUNK], flat the code's index in the
    row-major [N, groups] matrix) plus the mean (mean_ptr[0]), two roundings in float32 (mul_rn keeps them two),
    then rounded to the weight's dtype (SCALE_DTYPE: prepared.SCALE_DTYPE_IDS), 1 where that is 0, NaN for
    code 0 (a poisoned segment). Decoded here, a group costs the kernel a byte and a cached chunk
    scale; decoded before the kernel by PyTorch ops it cost a float scale per group written and read
    again, several launches and their host time on every call."""
    if DQ:
        code = tl.load(scales_ptr + offs, mask=mask, other=128).to(tl.int32)
        chunk = tl.load(second_ptr + flat // DQ_CHUNK_C, mask=mask, other=1.0)
        s = mul_rn((code - 128).to(tl.float32), chunk) + tl.load(mean_ptr)
        if SCALE_DTYPE == 1:
            s = round_to(s, tl.float16)
        elif SCALE_DTYPE == 2:
            s = round_to(s, tl.bfloat16)
        s = tl.where(s == 0, 1.0, s)
        s = tl.where(code == 0, float("nan"), s)
        return tl.where(mask, s, 1.0)
    else:
        return tl.load(scales_ptr + offs, mask=mask, other=1.0).to(tl.float32)


@triton.jit
def dequant_tile(codes_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, rows, k0, N, K, stride_cn,
                 stride_sn, stride_sg, BITS: tl.constexpr, OFFSET: tl.constexpr, CODE: tl.constexpr,
                 SYMMETRIC: tl.constexpr, GRANULARITY: tl.constexpr, GROUP: tl.constexpr, DQ: tl.constexpr,
                 SCALE_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VECTOR: tl.constexpr = 0):
    """Dequantized float32 tile W[rows, k0 : k0 + BLOCK_K] -> [BLOCK_N, BLOCK_K] (codes as in
    unpack_tile).

    Scales (and zeros, read only when not SYMMETRIC) are one value (GRANULARITY 0), one per row at
    [row * stride_sn] (1), or one per group of GROUP columns at [row * stride_sn + group *
    stride_sg] (2; zeros with the scales' strides; BLOCK_K and GROUP are powers of two, so either a
    tile lies in one group or it holds BLOCK_K // GROUP whole groups); DQ: nf4_dq's scale codes,
    decoded here (segment_scales; contiguous, stride_sg 1).
    Columns past K hold finite garbage: mask them when storing, or multiply them by zeros.
    """
    row_ok = rows < N
    q = unpack_tile(codes_ptr, table_ptr, rows, k0, N, K, stride_cn, BITS, OFFSET, CODE, BLOCK_N, BLOCK_K, VECTOR)
    if GRANULARITY == 0:
        w = q * tl.load(scales_ptr).to(tl.float32)
        if not SYMMETRIC:
            w += tl.load(zeros_ptr).to(tl.float32)
    elif GRANULARITY == 1 or BLOCK_K <= GROUP:
        col = 0 if GRANULARITY == 1 else k0 // GROUP
        s_off = rows * stride_sn + col * stride_sg
        flat = rows * tl.cdiv(K, GROUP) + col
        w = q * segment_scales(scales_ptr, second_ptr, mean_ptr, s_off, flat, row_ok, DQ, SCALE_DTYPE)[:, None]
        if not SYMMETRIC:
            w += tl.load(zeros_ptr + s_off, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    else:
        NG: tl.constexpr = BLOCK_K // GROUP
        groups = k0 // GROUP + tl.arange(0, NG)
        g_mask = row_ok[:, None] & (groups[None, :] < K // GROUP)
        s_off = rows[:, None] * stride_sn + groups[None, :] * stride_sg
        flat = rows[:, None] * tl.cdiv(K, GROUP) + groups[None, :]
        scale = segment_scales(scales_ptr, second_ptr, mean_ptr, s_off, flat, g_mask, DQ, SCALE_DTYPE)
        w3 = tl.reshape(q, (BLOCK_N, NG, GROUP)) * scale[:, :, None]
        if not SYMMETRIC:
            w3 += tl.load(zeros_ptr + s_off, mask=g_mask, other=0.0).to(tl.float32)[:, :, None]
        w = tl.reshape(w3, (BLOCK_N, BLOCK_K))
    return w


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
def load_packed(codes_ptr, rows, k0, N, K, stride_cn, BITS: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, EVEN: tl.constexpr = False):
    """uint8 [BLOCK_N, BLOCK_K // (8 // BITS)]: the bytes that hold W[rows, k0 : k0 + BLOCK_K] (as
    in unpack_tile; bytes past the row read as 0). EVEN: the tile lies inside W (no mask, so the
    loads can be vectorized)."""
    PER_BYTE: tl.constexpr = 8 // BITS
    byte_cols = k0 // PER_BYTE + tl.arange(0, BLOCK_K // PER_BYTE)
    ptrs = codes_ptr + rows[:, None] * stride_cn + byte_cols[None, :]
    if EVEN:
        return tl.load(ptrs)
    byte_mask = (rows < N)[:, None] & (byte_cols[None, :] < (K + PER_BYTE - 1) // PER_BYTE)
    return tl.load(ptrs, mask=byte_mask, other=0)


@triton.jit
def tile_params(scales_ptr, zeros_ptr, second_ptr, mean_ptr, rows, k0, N, K, stride_sn, stride_sg,
                SYMMETRIC: tl.constexpr, GRANULARITY: tl.constexpr, GROUP: tl.constexpr, DQ: tl.constexpr,
                SCALE_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(scale, zero), float32 [BLOCK_N, NG], of the segments of W[rows, k0 : k0 + BLOCK_K]: NG =
    BLOCK_K // GROUP groups where a tile holds several, else 1 (per tensor, per channel, or a tile
    inside one group). zero is 0 for SYMMETRIC. As dequant_tile reads them, for apply_params."""
    row_ok = rows < N
    if GRANULARITY == 0:
        scale = tl.zeros((BLOCK_N, 1), tl.float32) + tl.load(scales_ptr).to(tl.float32)
        zero = tl.zeros((BLOCK_N, 1), tl.float32)
        if not SYMMETRIC:
            zero += tl.load(zeros_ptr).to(tl.float32)
    else:
        if GRANULARITY == 1:
            segs = tl.zeros((1,), tl.int32)
            seg_ok = row_ok[:, None]
        elif BLOCK_K <= GROUP:
            segs = tl.zeros((1,), tl.int32) + k0 // GROUP
            seg_ok = row_ok[:, None]
        else:
            segs = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
            seg_ok = row_ok[:, None] & (segs[None, :] < K // GROUP)
        s_off = rows[:, None] * stride_sn + segs[None, :] * stride_sg
        flat = rows[:, None] * tl.cdiv(K, GROUP) + segs[None, :]
        scale = segment_scales(scales_ptr, second_ptr, mean_ptr, s_off, flat, seg_ok, DQ, SCALE_DTYPE)
        if SYMMETRIC:
            zero = tl.zeros_like(scale)
        else:
            zero = tl.load(zeros_ptr + s_off, mask=seg_ok, other=0.0).to(tl.float32)
    return scale, zero


@triton.jit
def apply_params(q, scale, zero, SYMMETRIC: tl.constexpr, BLOCK_N: tl.constexpr, WIDTH: tl.constexpr,
                 NG: tl.constexpr):
    """q [BLOCK_N, WIDTH] * scale + zero, with scale and zero [BLOCK_N, NG] from tile_params: the
    NG segments each take WIDTH // NG consecutive columns of q (q may hold one field of each byte,
    whose columns are then bytes: a segment is a whole number of bytes)."""
    if NG == 1:
        w = q * scale
        if not SYMMETRIC:
            w += zero
    else:
        w3 = tl.reshape(q, (BLOCK_N, NG, WIDTH // NG)) * scale[:, :, None]
        if not SYMMETRIC:
            w3 += zero[:, :, None]
        w = tl.reshape(w3, (BLOCK_N, WIDTH))
    return w


@triton.jit
def half_tile(codes_ptr, scales_ptr, zeros_ptr, rows, k0, N, K, stride_cn, stride_sn, stride_sg, BITS: tl.constexpr,
              OFFSET: tl.constexpr, SYMMETRIC: tl.constexpr, GRANULARITY: tl.constexpr, GROUP: tl.constexpr,
              DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
              SATURATE: tl.constexpr = True):
    """W[rows, k0 : k0 + BLOCK_K] of 4- or 2-bit integer codes whose scales (and zeros) are stored
    in DTYPE (float16 or bfloat16), dequantized in DTYPE two elements to an instruction and, with
    SATURATE, saturated (field_ptx.half_fields): [BLOCK_N, BLOCK_K] in DTYPE. GPU only.

    Each field of the bytes comes out as its own tile; tl.join interleaves them back into column
    order in registers. One rounding where dequant_tile's float32 route rounds twice (to float32,
    then to DTYPE): the two can differ by a unit in the last place where the float32 value lands
    on a tie of DTYPE, as the reference and a fused multiply-add already may (dequant_close)."""
    PER_BYTE: tl.constexpr = 8 // BITS
    BYTES: tl.constexpr = BLOCK_K // PER_BYTE
    NG: tl.constexpr = BLOCK_K // GROUP if GRANULARITY == 2 and BLOCK_K > GROUP else 1
    packed = load_packed(codes_ptr, rows, k0, N, K, stride_cn, BITS, BLOCK_N, BLOCK_K, EVEN)
    # DQ (nf4_dq) never reaches here, so its arguments are stand-ins
    scale, zero = tile_params(scales_ptr, zeros_ptr, scales_ptr, scales_ptr, rows, k0, N, K, stride_sn, stride_sg,
                              SYMMETRIC, GRANULARITY, GROUP, False, 0, BLOCK_N, BLOCK_K)
    if NG == 1:
        f = half_fields(packed, scale, zero, OFFSET, BITS, DTYPE, SATURATE)
    else:
        f = half_fields(tl.reshape(packed, (BLOCK_N, NG, BYTES // NG)), scale[:, :, None], zero[:, :, None], OFFSET,
                        BITS, DTYPE, SATURATE)
    if PER_BYTE == 2:
        w = tl.join(tl.reshape(f[0], (BLOCK_N, BYTES)), tl.reshape(f[1], (BLOCK_N, BYTES)))
    else:
        f0, f1, f2, f3 = (tl.reshape(f[0], (BLOCK_N, BYTES)), tl.reshape(f[1], (BLOCK_N, BYTES)),
                          tl.reshape(f[2], (BLOCK_N, BYTES)), tl.reshape(f[3], (BLOCK_N, BYTES)))
        # join(join(f0, f2), join(f1, f3))[..., i, j] is f(2i + j): row-major order f0 f1 f2 f3
        w = tl.join(tl.join(f0, f2), tl.join(f1, f3))
    return tl.reshape(w, (BLOCK_N, BLOCK_K))


@triton.jit
def dequantize_kernel(codes_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, out_ptr, N, K, stride_cn,
                      stride_on, stride_sn, stride_sg, BITS: tl.constexpr, OFFSET: tl.constexpr, CODE: tl.constexpr,
                      SYMMETRIC: tl.constexpr, GRANULARITY: tl.constexpr, GROUP: tl.constexpr, DQ: tl.constexpr,
                      SCALE_DTYPE: tl.constexpr, OUT_MAX: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      EVEN: tl.constexpr = False, VECTOR: tl.constexpr = 0, SATURATE: tl.constexpr = True):
    """out[N, K] = dequantized codes (layout and scales as in dequant_tile), clamped to
    [-OUT_MAX, OUT_MAX] (the output dtype's largest finite value) with NaN kept. SATURATE False:
    no code of the weight can pass it (PreparedWeight.fits), and the clamp is left out.
    Grid: (cdiv(K, BLOCK_K), cdiv(N, BLOCK_N)). EVEN: the tiles lie inside the matrix (no masks).
    VECTOR: the bytes of codes a thread loads at once on the float32 route (0: the compiler's 16).
    Those of one 16-byte store of the output (what dequantize_plan passes for 2-byte outputs) make
    the unpacked tile come out in the stores' layout; 16 bytes make it go through shared memory to
    be stored. On an H200 at 8192^2 (kernels/NOTES.md, session 15) a store's worth took int8 per
    channel bfloat16 65.4 -> 53.9 us, NF4 bfloat16 64.2 -> 55.7, nf4_dq float16 54.7 -> 51.5, and
    cost NF4 float16 49.8 -> 52.1 and int4 g128 to float32 82.3 -> 82.8; half_tile loads 16
    bytes, measured faster there (int4 g128 45.9 against 47.1 us: more bytes in flight a thread).
    Integer codes of 4 and 2 bits whose scales are stored in the output's half-precision dtype
    take half_tile on the GPU (int4 g128 float16 at 8192^2: 13.5 -> 8.0 instructions an element
    in sm_90 SASS, 50.5 -> 46-47.6 us on an H200, kernels/NOTES.md); the rest take dequant_tile's
    float32 route."""
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = pid_k * BLOCK_K
    OUT_DTYPE: tl.constexpr = out_ptr.dtype.element_ty
    HALF: tl.constexpr = (ON_GPU and CODE == 0 and BITS < 8 and OUT_DTYPE != tl.float32
                          and scales_ptr.dtype.element_ty == OUT_DTYPE and zeros_ptr.dtype.element_ty == OUT_DTYPE)
    if HALF:
        w = half_tile(codes_ptr, scales_ptr, zeros_ptr, rows, k0, N, K, stride_cn, stride_sn, stride_sg, BITS, OFFSET,
                      SYMMETRIC, GRANULARITY, GROUP, OUT_DTYPE, BLOCK_N, BLOCK_K, EVEN, SATURATE)
    else:
        w = dequant_tile(codes_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, rows, k0, N, K, stride_cn,
                         stride_sn, stride_sg, BITS, OFFSET, CODE, SYMMETRIC, GRANULARITY, GROUP, DQ, SCALE_DTYPE,
                         BLOCK_N, BLOCK_K, VECTOR)
        # q * scale + zero can pass the dtype's maximum by rounding (fp16: 127 * 516 = 65532 > 65504)
        if SATURATE:
            w = tl.clamp(w, -OUT_MAX, OUT_MAX, propagate_nan=tl.PropagateNan.ALL)
        w = round_to(w, OUT_DTYPE)
    cols = k0 + tl.arange(0, BLOCK_K)
    ptrs = out_ptr + rows[:, None] * stride_on + cols[None, :]
    if EVEN:
        tl.store(ptrs, w)
    else:
        tl.store(ptrs, w, mask=(rows < N)[:, None] & (cols[None, :] < K))


_dequantize_launch = Launcher(dequantize_kernel)


@dataclass(frozen=True)
class DequantizePlan:
    """dequantize's launch for one weight and output dtype, made on its first call and kept with
    the weight (PreparedWeight.dequantize_plans): the grid, the constants and the launch key."""
    grid: Callable[[dict[str, Any]], tuple[int, int]]
    constants: dict[str, Any]
    key: tuple


def dequantize_plan(q: QuantizedTensor, p: PreparedWeight, dtype: torch.dtype) -> DequantizePlan:
    n, k = q.shape
    spec = q.spec
    block_k = max(spec.group_size or 0, min(MIN_BLOCK_K, triton.next_power_of_2(max(k, spec.per_byte))))
    block_n = max(1, TILE_ELEMS // block_k)
    if (spec.codebook == "nf4" and (spec.double_quant or dtype == torch.float16) and k >= NF4_TILE_K
            and (spec.group_size or 0) <= NF4_TILE_K):
        block_n, block_k = NF4_TILE_N, NF4_TILE_K
    grid = (cdiv(k, block_k), cdiv(n, block_n))
    # GROUP: per channel and per tensor dequant_tile reads none; block_k there is what this
    # launcher has always passed, so its compiled kernels stay the ones measured
    # a weight none of whose codes can pass the dtype's range is not clamped (one instruction an
    # element of the ~7 of the half route's, two of the float32 route's; kernels/NOTES.md, session 24)
    # (and always clamped where a write in place could not be seen: tensors made under
    # torch.inference_mode keep no version counters, prepared.scale_versions)
    saturate = not p.fits(dtype) or scale_versions(p) is None
    constants = dict(p.fmt, GROUP=spec.group_size or block_k, OUT_MAX=torch.finfo(dtype).max, BLOCK_N=block_n,
                     BLOCK_K=block_k, EVEN=n % block_n == 0 and k % block_k == 0,
                     VECTOR=16 // dtype.itemsize // spec.per_byte if dtype.itemsize == 2 else 0, SATURATE=saturate)
    # the output is always new from PyTorch's allocator (16-byte aligned), contiguous [N, K]: the
    # weight's share of the key (its tensors, sizes and format), the dtype and whether its values
    # are clamped (two weights alike in their tensors can differ there) say the rest
    return DequantizePlan(lambda meta: grid, constants, (p.own_key, dtype, saturate))


def dequantize_choice(q: QuantizedTensor, dtype: torch.dtype) -> str:
    """The tile dequantize launches for q into `dtype` (its plan, made on first use), as the
    results' kernel_config puts it. Planned rather than autotuned, with Triton's default warps."""
    p = prepared(q)
    plan = p.dequantize_plans.get(dtype) or dequantize_plan(q, p, out_dtype_of(q, dtype))
    return f"BLOCK_N={plan.constants['BLOCK_N']} BLOCK_K={plan.constants['BLOCK_K']} num_warps=4"


def dequantize(q: QuantizedTensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantize with the Triton kernel into a new [N, K] tensor of `out_dtype` (default: the
    scales' dtype, which is the dtype that was quantized). Values saturate at the output dtype's
    largest finite magnitude; a poisoned segment (NaN scale) comes out NaN. q's checks and the
    launch's plan are made on its first use (prepared.py), so a call pays on the host for the
    output and the launch only."""
    return dequantize_prepared(q, prepared(q), q.dtype if out_dtype is None else out_dtype)


def dequantize_prepared(q: QuantizedTensor, p: PreparedWeight, dtype: torch.dtype) -> torch.Tensor:
    """dequantize with q's PreparedWeight already in hand (qmatmul's dequantize+cuBLAS path)."""
    # anything but a torch.dtype (a string, a list) goes to out_dtype_of, whose error names it
    plan = p.dequantize_plans.get(dtype) if isinstance(dtype, torch.dtype) else None
    if plan is None:
        plan = p.dequantize_plans[dtype] = dequantize_plan(q, p, out_dtype_of(q, dtype))
    n, k = q.shape
    out = torch.empty((n, k), dtype=dtype, device=q.codes.device)
    sizes = (n, k, q.codes.stride(0), k, p.stride_sn, p.stride_sg)
    # the weight's tensors go to a direct launch as their addresses (PreparedWeight.pointers)
    _dequantize_launch(plan.grid, (*p.pointers, out, *sizes), plan.constants, plan.key,
                       lambda: (q.codes, p.scales, p.zeros, p.table, p.second, p.mean, out, *sizes))
    return out
