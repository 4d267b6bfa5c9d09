"""Exact float arithmetic the kernels share: rounding to an integer and to a dtype, correctly
rounded division and table lookups, each written so that the GPU and Triton's interpreter give
the same bits.

Where the fast form on the GPU cannot run alike under the interpreter (its tl.fma rounds twice,
and it has no inline PTX), ON_GPU picks the plain exact form there instead; tests/gpu checks the
fast forms bit for bit against the plain ones on the GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .checks import interpreting

ON_GPU = tl.constexpr(not interpreting())  # the fast forms run (False under the interpreter)


@triton.jit
def round_half_even(v):
    """Round float32 to the nearest integer, ties to even, for |v| < 2**22.

    Adding and subtracting 1.5 * 2**23 pushes the fraction out of the mantissa under the IEEE
    default rounding mode; it is exact where libdevice's rint is not available (the interpreter).
    """
    return (v + 12582912.0) - 12582912.0


@triton.jit
def rounded_int(v, OFFSET: tl.constexpr = 0):
    """round(v) + OFFSET (round ties to even) as int32, for |v| + |OFFSET| < 2**22: the float32 bits
    of v + 1.5 * 2**23 + OFFSET are 0x4B400000 + round(v) + OFFSET. One addition instead of a
    float-to-int conversion, which issues at a quarter of the FMA rate, and the offset in the same
    addition (an even OFFSET moves a tie's two neighbours alike, so it still goes to the even one)."""
    tl.static_assert(OFFSET % 2 == 0, "an odd offset would send ties to the odd neighbour")
    return (v + (12582912.0 + OFFSET)).to(tl.int32, bitcast=True) - 0x4B400000


@triton.jit
def divide(a, s, SAFE_RANGE: tl.constexpr, SIGNED_ZERO: tl.constexpr = True):
    """a / s rounded to nearest, ties to even: tl.div_rn's result, without a reciprocal per element,
    for quotients |a / s| under 2**20 (quantize's are at most a few hundred).

    On the GPU, r = 1 / s is taken once per scale (s broadcasts along the last axis), then each
    quotient a * r gets two corrections with the exact remainder fma(-s, q, a): after the first, q
    is within an ulp of a / s, and the second rounds it correctly (Markstein's theorem: Muller et
    al., Handbook of Floating-Point Arithmetic, 2nd ed., section 4.7). The remainder is exact while
    |s| stays in [2**-80, 2**80] and |a / s| is not far below 2**-10 (smaller quotients are code 0
    in every format whichever way they round). SAFE_RANGE: every |s| is known to be in range (the
    scales are float16). Otherwise a scale outside it is brought in by a power of two, 2**100 or
    2**-100, and a with it (exact: both stay normal numbers, or, where a * 2**-100 falls among the
    subnormals, the quotient is below 2**-100 and rounds to 0 either way), which leaves the
    quotient as it was; one multiplication an element. (Before, a tile holding such a scale
    divided with tl.div_rn: never run on real weights, but compiled into every bfloat16 and float32
    quantize, which held 144-150 registers for it against 80-96.)
    SIGNED_ZERO False: a quotient of -0.0 may come out +0.0 (for callers that round it to an
    integer or compare it, where the two are the same).
    a must be finite where s is not NaN (in quantize an infinite element poisons its segment's
    scale to NaN): an infinite a would meet an infinite remainder and come out NaN, not +-inf.
    """
    if ON_GPU:
        if not SAFE_RANGE:
            s_abs = tl.abs(s)
            into_range = tl.where(s_abs < 2.0**-80, 2.0**100, tl.where(s_abs > 2.0**80, 2.0**-100, 1.0))
            s = s * into_range
            a = a * into_range
        r = tl.div_rn(tl.full(s.shape, 1.0, tl.float32), s)
        q0 = a * r
        q = tl.fma(tl.fma(-s, q0, a), r, q0)
        q = tl.fma(tl.fma(-s, q, a), r, q)
        if SIGNED_ZERO:  # a correction adds +0 to -0: a / s of -0.0 keeps its sign
            q = tl.where(a == 0, q0, q)
    else:
        q = tl.div_rn(a, s)
    return q


@triton.jit
def mul_rn(a, b):
    """float32 a * b rounded once and never fused into a following addition: the compiler would
    otherwise make a * b + c one FMA, rounded once where PyTorch rounds twice. On the GPU, PTX
    mul.rn.f32 written out (no pass contracts it; libdevice's __fmul_rn compiles to the .ftz form
    under Triton, which would flush subnormals PyTorch keeps); the interpreter never fuses."""
    if ON_GPU:
        return tl.inline_asm_elementwise("mul.rn.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return a * b


@triton.jit
def bfloat16_bits_rounded(x):
    """float32 -> the nearest bfloat16 value (ties to even), as float32, by integer arithmetic on
    the bits: what round_to does under the interpreter, whose float32 -> bfloat16 cast does not
    round to nearest even (tests/gpu checks the GPU's cast against it bit for bit)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    # A NaN stays a NaN: the GPU's canonical NaN 0x7FFFFFFF would otherwise carry into the
    # sign bit and come out as -0.0.
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))


@triton.jit
def round_to(x, ty: tl.constexpr):
    """float32 -> the nearest value of dtype `ty` (ties to even), returned as float32.

    bfloat16: on the GPU its own conversion (cvt.rn, one instruction for two elements); under the
    interpreter, whose cast does not round to nearest even, integer arithmetic on the bits
    (bfloat16_bits_rounded, ~5 instructions an element where it ran on the GPU too, before
    session 24), so that the codes agree on both. The result then converts to `ty` exactly on
    either.
    """
    if ty == tl.bfloat16:
        if ON_GPU:
            return x.to(tl.bfloat16).to(tl.float32)
        else:
            return bfloat16_bits_rounded(x)
    elif ty == tl.float16:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x


@triton.jit
def lookup(table_ptr, index, SIZE: tl.constexpr):
    """table_ptr[index] for int32 indices in [0, SIZE) of any shape (SIZE a power of two): the table
    loaded once into registers and indexed by tl.gather, which on the GPU stores it to shared
    memory (a few stores and two barriers a call) and reads one entry an index (an LDS). A load
    from the global table per index costs a 64-bit address (3-4 integer instructions) and an L1
    access. Called on a whole tile, so the store and the barriers come once a tile."""
    table = tl.load(table_ptr + tl.arange(0, SIZE))
    flat = tl.reshape(index, (index.numel,))
    return tl.reshape(tl.gather(table, flat, 0), index.shape)
