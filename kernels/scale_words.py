"""The scale+zero words the matmul kernels (the GEMV, the GEMMs) read per-group scales and zeros
from: a scale (low half) and its zero (high half), both 2-byte values of the weight's scale dtype,
in one int32 word, laid out group-major (prepared.ScaleArgs; quantize writes asymmetric 2-byte
per-group scales and zeros so, spec.Storage)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def word_halves(words, DTYPE: tl.constexpr):
    """(low half, high half) of int32 words that each hold two 2-byte values of DTYPE (float16 or
    bfloat16). Little endian: the value at the lower address is the low half."""
    return words.to(tl.int16).to(DTYPE, bitcast=True), (words >> 16).to(tl.int16).to(DTYPE, bitcast=True)


@triton.jit
def scale_zero_words(words, SCALE_DTYPE: tl.constexpr):
    """(scale, zero), float32, of int32 words that each hold a scale (low half) and its zero (high
    half) of the dtype SCALE_DTYPE (codebooks.SCALE_DTYPE_IDS: 1 float16, 2 bfloat16), as
    prepared.ScaleArgs lays them out."""
    if SCALE_DTYPE == 1:
        scale, zero = word_halves(words, tl.float16)
    else:
        scale, zero = word_halves(words, tl.bfloat16)
    return scale.to(tl.float32), zero.to(tl.float32)


@triton.jit
def load_scale_zero_words(words_ptr, offs, mask, SCALE_DTYPE: tl.constexpr, EVEN: tl.constexpr):
    """scale_zero_words of the words at words_ptr + offs (a word past the weight, where mask is
    False, reads as 0 unless EVEN says there is none): one 4-byte load gives a scale and its zero."""
    if EVEN:
        words = tl.load(words_ptr + offs)
    else:
        words = tl.load(words_ptr + offs, mask=mask, other=0)
    return scale_zero_words(words, SCALE_DTYPE)
