"""The per-element half of quantize: a float tile with its segments' scales and zeros to code
fields (integers, NF4 level indices or e4m3 bits), packed into bytes and stored. Called by
quantization.quantize_kernel once a tile's scales are known; the format is spec.py's."""

from __future__ import annotations

import triton
import triton.language as tl

from .exact_math import ON_GPU, divide, lookup, rounded_int


@triton.jit
def segment_columns(start, NG: tl.constexpr, C: tl.constexpr, CHUNK: tl.constexpr, GROUP: tl.constexpr):
    """Column offsets [1, NG, C, CHUNK] of NG segments of GROUP columns from `start`, segment g
    held as C = GROUP // CHUNK chunks of CHUNK columns: quantize_kernel's tile layout. In bytes
    (start, CHUNK and GROUP divided by the fields a byte holds), the packed codes' columns."""
    g = tl.arange(0, NG)[None, :, None, None]
    c = tl.arange(0, C)[None, None, :, None]
    e = tl.arange(0, CHUNK)[None, None, None, :]
    return start + g * GROUP + c * CHUNK + e


@triton.jit
def fp8_fields(v):
    """float32 -> float8 e4m3 bit patterns (int32), nearest value, ties to even, as torch's
    .to(torch.float8_e4m3fn); v is clamped to [-448, 448] first and a NaN gives 0.

    Written with integer arithmetic on the float32 bits rather than a conversion instruction, so
    that the interpreter and the GPU round alike: below 2^-6 (e4m3's subnormals, steps of 2^-9)
    the code is |v| * 2^9 rounded; above, the float32 bits rounded to 3 mantissa bits, with the
    exponent rebased from 127 to 7 (120 << 3 = 960). The sign comes from v's bits (-0.0 -> 0x80).
    """
    v = tl.where(v == v, tl.minimum(tl.maximum(v, -448.0), 448.0), 0.0)
    a = tl.abs(v)
    bits = a.to(tl.int32, bitcast=True)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20) - 960
    subnormal = rounded_int(a * 512.0)
    sign = (v.to(tl.int32, bitcast=True) >> 24) & 0x80
    return tl.where(a < 0.015625, subnormal, normal) | sign


@triton.jit
def clamp_free(scale, QMAX: tl.constexpr, CODE: tl.constexpr, SCALE_TY: tl.constexpr):
    """True when every quotient (x - zero) / scale of the tile's integer codes rounds into [QMIN,
    QMAX] without a clamp: every scale is a normal number of its dtype (not NaN, not subnormal).
    Then the scale is within its dtype's unit roundoff u of span / QMAX, so |quotient| <= QMAX (1 +
    u) + a float32 rounding, under QMAX + 1/2 where QMAX u < 1/4 (every format on float16 and float32
    scales; on bfloat16 ones, u = 2^-8, 4- and 2-bit codes only), and the quotient is never below 0
    (asymmetric: x - zero >= 0, the zero being the segment's minimum in w's own dtype, as the
    scales are) or -QMAX (1 + u) (symmetric). A NaN scale (a poisoned segment) needs the clamp:
    it sends NaN to code 0."""
    if CODE == 0:
        if SCALE_TY == tl.bfloat16:
            UNIT: tl.constexpr = 2.0**-8
            SMALLEST: tl.constexpr = 2.0**-126
        elif SCALE_TY == tl.float16:
            UNIT: tl.constexpr = 2.0**-11
            SMALLEST: tl.constexpr = 2.0**-14
        else:
            UNIT: tl.constexpr = 2.0**-24
            SMALLEST: tl.constexpr = 2.0**-126
        if QMAX * UNIT < 0.25:
            return tl.min((scale >= SMALLEST).to(tl.int32)) == 1
        else:
            return False
    else:
        return False


@triton.jit
def quantize_tile(x, scale, zero, table_ptr, QMIN: tl.constexpr, QMAX: tl.constexpr, SYMMETRIC: tl.constexpr,
                  CODE: tl.constexpr, SAFE_RANGE: tl.constexpr, CLAMP: tl.constexpr = True):
    """float32 tile -> unsigned int32 fields, broadcasting scale/zero per row: code + offset
    (CODE 0), the NF4 level's index (1: the number of the 15 midpoints that v is greater than,
    from the encode table at table_ptr, codebooks.nf4_cells; a NaN is greater than none), or the
    e4m3 bits (2, fp8_fields).

    v is NaN exactly in a poisoned segment (NaN scale); its fields are 0: on the GPU through the
    clamp (max.f32 of NaN and QMIN is QMIN), under the interpreter, whose maximum keeps the NaN,
    by a select first; for NF4 a NaN is greater than no midpoint.
    """
    a = x if SYMMETRIC else x - zero
    v = divide(a, scale, SAFE_RANGE, SIGNED_ZERO=CODE == 2)  # only e4m3 codes tell -0.0 from 0.0
    if CODE == 0:
        if CLAMP:
            if not ON_GPU:
                v = tl.where(v == v, v, QMIN)
            v = tl.minimum(tl.maximum(v, QMIN), QMAX)  # on the GPU, max.f32 of NaN and QMIN is QMIN
        fields = rounded_int(v, -QMIN)
    elif CODE == 1:
        # the count of midpoints below v: the count below v's cell (of 32 over [-1, 1]) plus one
        # compare with the midpoint inside it (codebooks.nf4_cells), the cell's two entries looked
        # up with tl.gather (a 32-entry table: a warp shuffle a lookup). A binary search over the
        # 15 midpoints took 4 compares and 11 selects an element.
        # The cell, round(v * 16 + 15.5) by the magic number (rounded_int: an addition, where a
        # float-to-int conversion issues at a quarter of the rate), is floor(v * 16 + 16) but at
        # an edge, where it may be either neighbour, which the table allows. The table's counts
        # are stored as 1.5 * 2^23 + count, whose bits give the count without a conversion
        # either. (Adding the compare in float, where(v > t, count + 1, count), duplicated the
        # division in nf4_dq's codes pass: 64 -> 96 registers.)
        position = v * 16.0 + 15.5
        if not ON_GPU:
            position = tl.where(v == v, position, 0.0)  # on the GPU max.f32 of NaN and 0 is 0
        cell = rounded_int(tl.minimum(tl.maximum(position, 0.0), 31.0))
        threshold = lookup(table_ptr, cell, 32)
        count = lookup(table_ptr + 32, cell, 32)
        fields = count.to(tl.int32, bitcast=True) - 0x4B400000 + (v > threshold).to(tl.int32)
    else:
        fields = fp8_fields(v)
    return fields


@triton.jit
def pack_tile(fields, BLOCK_N: tl.constexpr, NG: tl.constexpr, C: tl.constexpr, CHUNK: tl.constexpr,
              BITS: tl.constexpr):
    """[BLOCK_N, NG, C, CHUNK] fields -> [BLOCK_N, NG, C, CHUNK * BITS // 8] bytes, little end
    first.

    Neighbouring fields are separated with reshape + split (which stays in registers) rather than
    a sum over a small axis (which the compiler lowers through shared memory).
    """
    if BITS == 8:
        packed = fields
    elif BITS == 4:
        even, odd = tl.split(tl.reshape(fields, (BLOCK_N, NG, C, CHUNK // 2, 2)))
        packed = even + (odd << 4)
    else:
        f02, f13 = tl.split(tl.reshape(fields, (BLOCK_N, NG, C, CHUNK // 4, 2, 2)))  # k%2 == 0 | 1
        f0, f2 = tl.split(f02)
        f1, f3 = tl.split(f13)
        packed = f0 + (f1 << 2) + (f2 << 4) + (f3 << 6)
    return packed.to(tl.uint8)


@triton.jit
def quantize_store(codes_ptr, table_ptr, x, scale, zero, rows, N, k0, K, mask, stride_cn,
                   BITS: tl.constexpr, QMIN: tl.constexpr, QMAX: tl.constexpr, SYMMETRIC: tl.constexpr,
                   CODE: tl.constexpr, SAFE_RANGE: tl.constexpr, GROUP: tl.constexpr, CHUNK: tl.constexpr,
                   BLOCK_N: tl.constexpr, NG: tl.constexpr, SCALE_TY: tl.constexpr):
    """Quantize the float32 tile x [BLOCK_N, NG, C, CHUNK] (segment_columns from k0) with per-segment
    scale and zero [BLOCK_N, NG] (as float32; stored as SCALE_TY), pack it and store the bytes.
    mask None: the tile lies inside the matrix.

    A tile whose integer codes need no clamp (clamp_free) skips it: two of the ~19 instructions an
    element of int4 per group. Each branch stores its own codes; with one store after the branch
    the compiler computed both ways and selected (142 registers against 96; scratch SASS counts)."""
    if clamp_free(scale, QMAX, CODE, SCALE_TY):
        store_codes(codes_ptr, table_ptr, x, scale, zero, rows, N, k0, K, mask, stride_cn, BITS, QMIN, QMAX,
                    SYMMETRIC, CODE, SAFE_RANGE, GROUP, CHUNK, BLOCK_N, NG, False)
    else:
        store_codes(codes_ptr, table_ptr, x, scale, zero, rows, N, k0, K, mask, stride_cn, BITS, QMIN, QMAX,
                    SYMMETRIC, CODE, SAFE_RANGE, GROUP, CHUNK, BLOCK_N, NG, True)


@triton.jit
def store_codes(codes_ptr, table_ptr, x, scale, zero, rows, N, k0, K, mask, stride_cn,
                BITS: tl.constexpr, QMIN: tl.constexpr, QMAX: tl.constexpr, SYMMETRIC: tl.constexpr,
                CODE: tl.constexpr, SAFE_RANGE: tl.constexpr, GROUP: tl.constexpr, CHUNK: tl.constexpr,
                BLOCK_N: tl.constexpr, NG: tl.constexpr, CLAMP: tl.constexpr):
    """quantize_store's work, with or without the integer codes' clamp (quantize_tile)."""
    PER_BYTE: tl.constexpr = 8 // BITS
    C: tl.constexpr = GROUP // CHUNK
    fields = quantize_tile(x, scale[:, :, None, None], zero[:, :, None, None], table_ptr, QMIN, QMAX, SYMMETRIC,
                           CODE, SAFE_RANGE, CLAMP)
    byte_cols = segment_columns(k0 // PER_BYTE, NG, C, CHUNK // PER_BYTE, GROUP // PER_BYTE)
    byte_ptrs = codes_ptr + rows[:, None, None, None] * stride_cn + byte_cols
    if mask is None:
        tl.store(byte_ptrs, pack_tile(fields, BLOCK_N, NG, C, CHUNK, BITS))
    else:
        packed = pack_tile(tl.where(mask, fields, 0), BLOCK_N, NG, C, CHUNK, BITS)
        byte_mask = (rows < N)[:, None, None, None] & (byte_cols < (K + PER_BYTE - 1) // PER_BYTE)
        tl.store(byte_ptrs, packed, mask=byte_mask)
