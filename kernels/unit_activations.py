"""The GEMV's activations read a code unit at a time (quantized_matmul.qgemv_kernel).

Field j of an int32 word of codes holds column u * FIELDS + j of its row, so the activations a
word meets are FIELDS consecutive elements of x: one 16- or 32-byte load, where a load per field
reads 2 bytes at a stride of FIELDS elements. On an H200 (kernels/NOTES.md, session 13) the GEMV
over int4, NF4 and int2 words ran in 0.42 to 1.00 times the time of one load a field, over the 54
tiles and formats measured both ways (never slower).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def split8(t):
    """The 8 entries of the last three axes of t [..., 2, 2, 2], element 4 a + 2 b + c at [..., a, b, c],
    in order 0..7, each shaped like t without those axes. tl.split takes the last axis, in registers."""
    even, odd = tl.split(t)
    e0, e2 = tl.split(even)
    o1, o3 = tl.split(odd)
    t0, t4 = tl.split(e0)
    t2, t6 = tl.split(e2)
    t1, t5 = tl.split(o1)
    t3, t7 = tl.split(o3)
    return t0, t1, t2, t3, t4, t5, t6, t7


@triton.jit
def word_activations(x_ptr, first_cols, K, FIELDS: tl.constexpr, EVEN_K: tl.constexpr):
    """x[first_cols + j] as float32 for j < FIELDS (8 or 16), a tuple of FIELDS tensors shaped like
    first_cols [A, B]: the activations of each unit's columns in one load of FIELDS consecutive
    elements, taken apart in registers by tl.split (16 fields: the even and the odd ones first)."""
    cols = first_cols[:, :, None] + tl.arange(0, FIELDS)[None, None, :]
    if EVEN_K:
        xv = tl.load(x_ptr + cols, eviction_policy="evict_last")
    else:
        xv = tl.load(x_ptr + cols, mask=cols < K, other=0.0, eviction_policy="evict_last")
    xv = xv.to(tl.float32)
    A: tl.constexpr = first_cols.shape[0]
    B: tl.constexpr = first_cols.shape[1]
    if FIELDS == 8:
        return split8(tl.reshape(xv, (A, B, 2, 2, 2)))
    else:
        even, odd = tl.split(tl.reshape(xv, (A, B, 2, 2, 2, 2)))
        e = split8(even)
        o = split8(odd)
        return e[0], o[0], e[1], o[1], e[2], o[2], e[3], o[3], e[4], o[4], e[5], o[5], e[6], o[6], e[7], o[7]
