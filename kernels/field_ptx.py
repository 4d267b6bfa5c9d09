"""Inline PTX that splits packed integer codes into their fields on the GPU, a few instructions a
field where Triton's shifts, masks and conversions take several more (kernels/NOTES.md). GPU
only: the interpreter runs no PTX, so the kernels use these where exact_math.ON_GPU holds and
the plain forms (dequantization.field_values) elsewhere; tests/gpu/test_fast_forms.py checks
every field at every position against the values they stand for.

- int_word_fields: an int32 word of 8 int4 (16 int2) fields into the float32 bits of 2^23 +
  field (or 1/2 + field / 256), one prmt a field: the GEMV's decode.
- half_fields: 4 bytes of int4 or int2 fields dequantized into float16 or bfloat16 pairs, (field -
  offset) * scale + zero rounded once: the GEMMs' decode.
"""

from __future__ import annotations

import triton
import triton.language as tl


def int_word_ptx(bits: int, halves: bool = False) -> str:
    """PTX that splits an int32 word of 32 // bits integer fields (field j at bits j * bits; 4- or
    2-bit fields) into float32 bits, one output each ($0.., the word last): those of 2^23 + field,
    or with `halves` those of 1/2 + field / 256.

    The word is masked into 8 // bits byte planes (plane s: field s of every byte, in that byte's
    low bits); then one ``prmt`` per field copies its byte into a constant: into the low byte of
    0x4B000000 (the exponent of 2^23), or the third byte of 0x3F000000 (1/2; the field lands on the
    mantissa's bits 16 to 19). 11 instructions per 8 int4 fields, where a shift, a mask and an or
    per field took ~2.6 after ptxas (kernels/NOTES.md).
    """
    fields, planes = 32 // bits, 8 // bits
    byte_mask = ((1 << bits) - 1) * 0x01010101
    constant, selector = (0x3F000000, 0x7054) if halves else (0x4B000000, 0x7540)
    position = 8 if halves else 0  # of the selector's nibble that takes the field's byte
    lines = ["{", f".reg .b32 iw, ic, ip<{planes}>;", f"mov.b32 iw, ${fields};", f"mov.b32 ic, {constant:#010x};",
             f"and.b32 ip0, iw, {byte_mask:#010x};"]
    for s in range(1, planes):
        lines += [f"shr.u32 ip{s}, iw, {s * bits};", f"and.b32 ip{s}, ip{s}, {byte_mask:#010x};"]
    # the field's byte (selector i: byte i of the plane) among ic's bytes
    lines += [f"prmt.b32 ${i * planes + s}, ip{s}, ic, {selector + (i << position):#06x};"
              for i in range(4) for s in range(planes)]
    return "\n".join(lines + ["}"])


INT4_WORD_PTX = tl.constexpr(int_word_ptx(4))
INT2_WORD_PTX = tl.constexpr(int_word_ptx(2))
INT4_HALVES_PTX = tl.constexpr(int_word_ptx(4, halves=True))
INT2_HALVES_PTX = tl.constexpr(int_word_ptx(2, halves=True))


@triton.jit
def int_word_fields(words, BITS: tl.constexpr, HALVES: tl.constexpr = False):
    """The 32 // BITS fields of int32 words (BITS 4 or 2) as the float32 bits of 2^23 + field (or,
    HALVES, of 1/2 + field / 256): a tuple of int32 tensors shaped like words, field j first
    (int_word_ptx). GPU only."""
    if BITS == 4:
        return tl.inline_asm_elementwise(INT4_HALVES_PTX if HALVES else INT4_WORD_PTX, "=r,=r,=r,=r,=r,=r,=r,=r,r", [words],
                                         dtype=(tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32,
                                                tl.int32, tl.int32), is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise(INT2_HALVES_PTX if HALVES else INT2_WORD_PTX, "=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,r",
                                         [words], dtype=(tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32,
                                                         tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32,
                                                         tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)


@triton.constexpr_function
def half_bits(value: float, bfloat16: bool) -> int:
    """The bits of a nonzero `value`, exact in the dtype, as float16 or bfloat16 in both halves of
    a word. (Arithmetic, not struct: a constexpr function may call only builtins.)"""
    mantissa_bits, bias = (7, 127) if bfloat16 else (10, 15)
    sign, magnitude, exponent = (0x8000 if value < 0 else 0), abs(value), 0
    while magnitude >= 2:
        magnitude, exponent = magnitude / 2, exponent + 1
    while magnitude < 1:
        magnitude, exponent = magnitude * 2, exponent - 1
    fraction = (magnitude - 1) * (1 << mantissa_bits)
    assert fraction == int(fraction), f"{value} is not exact in {'bfloat16' if bfloat16 else 'float16'}"
    return (sign | (exponent + bias) << mantissa_bits | int(fraction)) * 0x00010001


@triton.constexpr_function
def half_fields_ptx(bits: int, bfloat16: bool, saturate: bool = False, offset: int = 0) -> str:
    """PTX that dequantizes 4 bytes of 8 // bits integer fields into float16 (or bfloat16) pairs,
    field by field: for field j of each byte, (field - offset) * scale + zero with one rounding;
    `saturate`: then clamped to the dtype's finite range, NaN kept (dequantize's output).

    Operands ($ numbers): the outputs first, two registers (elements 0-1, 2-3) per field; then the
    4 bytes in one register and the scale and zero pairs (two registers each). Each byte goes into
    its own half-word (``prmt``); a field is masked where it lies and or-ed into the magic number
    (float16 1024, bfloat16 128: their unit in the last place is 1), so the half reads magic +
    field * 2^p, p the field's bit position (bfloat16's 7 mantissa bits take a byte's top field one
    bit lower, after a shift); one fma scales by 2^-p and takes away magic * 2^-p + offset (exact:
    the result is the small integer field - offset), one fma applies scale and zero: ~1.5
    instructions an element. Without the shift each field took before (session 21, kernels/NOTES.md;
    sm_90 SASS compiled on the CPU, GPU times from a probe on an H200): the split-K GEMM's 2-warp
    tile at M = 16, 8192^2 float16, int4 g128 22.62 -> 21.66 us, int2 g128 22.69 -> 21.25;
    dequantize 7.53 -> 7.25 instructions an element (int2 g128), its time unchanged. With one dot
    per field, the split-K GEMM's K loop had gone from 10.1 instructions an element (float32
    route, fields interleaved) to 4.8 (session 14). A constexpr function: the kernels ask
    for their variant by bits, dtype, saturation and offset.
    """
    fields = 8 // bits
    magic_value, mantissa = (128.0, 7) if bfloat16 else (1024.0, 10)
    magic = half_bits(magic_value, bfloat16)
    # the largest finite value, positive and negative, in both halves
    top, bottom = (0x7F7F7F7F, 0xFF7FFF7F) if bfloat16 else (0x7BFF7BFF, 0xFBFFFBFF)
    kind = "bf16x2" if bfloat16 else "f16x2"
    w, s0, z0 = 2 * fields, 2 * fields + 1, 2 * fields + 3
    lines = ["{", f".reg .b32 hz, hp<2>, hf, hq, ht, hb, hu<{fields}>, hc<{fields}>;", "mov.b32 hz, 0;",
             f"mov.b32 ht, {top:#010x};", f"mov.b32 hb, {bottom:#010x};",
             # bytes 0, 1 (then 2, 3) of the word into the low bytes of the two half-words
             f"prmt.b32 hp0, ${w}, hz, 0x4140;", f"prmt.b32 hp1, ${w}, hz, 0x4342;"]
    shifts = [max(0, (j + 1) * bits - mantissa) for j in range(fields)]
    for j in range(fields):
        position = j * bits - shifts[j]
        lines += [f"mov.b32 hu{j}, {half_bits(2.0 ** -position, bfloat16):#010x};",
                  f"mov.b32 hc{j}, {half_bits(-(magic_value * 2.0 ** -position + offset), bfloat16):#010x};"]
    for j in range(fields):
        mask = (((1 << bits) - 1) << (j * bits - shifts[j])) * 0x00010001
        for p in range(2):
            src, out = f"hp{p}", f"${2 * j + p}"
            if shifts[j]:
                lines.append(f"shr.u32 hf, hp{p}, {shifts[j]};")
                src = "hf"
            lines += [f"and.b32 hf, {src}, {mask:#010x};", f"or.b32 hf, hf, {magic:#010x};",
                      f"fma.rn.{kind} hq, hf, hu{j}, hc{j};", f"fma.rn.{kind} {out}, hq, ${s0 + p}, ${z0 + p};"]
            if saturate:
                # an fma that passes the largest finite value rounds to infinity; min.NaN keeps a NaN
                lines += [f"min.NaN.{kind} {out}, {out}, ht;", f"max.NaN.{kind} {out}, {out}, hb;"]
    return "\n".join(lines + ["}"])


@triton.jit
def half_fields(packed, scale, zero, OFFSET: tl.constexpr, BITS: tl.constexpr, DTYPE: tl.constexpr,
                SATURATE: tl.constexpr = False):
    """The 8 // BITS fields of uint8 `packed` (BITS 4 or 2), each dequantized, (field - OFFSET) *
    scale + zero rounded once, into DTYPE (float16 or bfloat16): a tuple of tensors shaped like
    packed, field 0 (the low bits) first. scale and zero: DTYPE, broadcast against packed.
    SATURATE: clamped to DTYPE's finite range, NaN kept. half_fields_ptx; GPU only."""
    s = scale.to(DTYPE)
    z = zero.to(DTYPE)
    ptx: tl.constexpr = half_fields_ptx(BITS, DTYPE == tl.bfloat16, SATURATE, OFFSET)
    if BITS == 4:
        return tl.inline_asm_elementwise(ptx, "=r,=r,=r,=r,r,r,r,r,r", [packed, s, z], dtype=(s.dtype, s.dtype),
                                         is_pure=True, pack=4)
    else:
        return tl.inline_asm_elementwise(ptx, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r", [packed, s, z],
                                         dtype=(s.dtype, s.dtype, s.dtype, s.dtype), is_pure=True, pack=4)
