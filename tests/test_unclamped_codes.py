"""quantize skips the integer codes' clamp on a tile whose scales are all normal numbers of their
dtype (kernels/quantize_codes.py, clamp_free). These tests check the bound that makes that safe,
on millions of (min, max) pairs, and that a tile holding a subnormal scale still clamps."""

import pytest
import torch

from quantbench.kernels import QuantSpec, quantize, quantize_ref, unpack_fields
from quantbench.kernels.references import qparams_ref

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
SPECS = [QuantSpec(b, s, "channel") for b in (8, 4, 2) for s in ("asymmetric", "symmetric")]
BITS_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}


def clamp_free(spec: QuantSpec, dtype: torch.dtype) -> bool:
    """The formats whose codes the kernel leaves unclamped on normal scales of `dtype`: qmax u < 1/4,
    u the dtype's unit roundoff (as clamp_free's constants)."""
    return spec.qmax * torch.finfo(dtype).eps / 2 < 0.25


def random_finite(dtype: torch.dtype, n: int, gen: torch.Generator) -> torch.Tensor:
    """n finite values of dtype from uniformly random bit patterns: every binade equally likely,
    subnormals and both signs included."""
    ints = BITS_OF[dtype]
    info = torch.iinfo(ints)
    bits = torch.randint(info.min, info.max, (n,), generator=gen, dtype=torch.int64).to(ints)
    v = bits.view(dtype)
    return v[torch.isfinite(v)]


def rounded_quotients(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec, dtype: torch.dtype):
    """round((x - zero) / scale) as quantize_ref computes it before its clamp, and whether the scale
    is a normal number (the segments the kernel leaves unclamped)."""
    scale, zero = qparams_ref(lo.float(), hi.float(), spec, dtype)
    a = x.float() if spec.symmetric else x.float() - zero.float()
    q = torch.round(a / scale.float())
    return q, scale.float() >= torch.finfo(dtype).tiny


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_quotients_of_normal_scales_round_into_the_code_range(spec, dtype):
    """Without the clamp a code past qmax would carry into the next field of its byte: every
    quotient of a segment whose stored scale is normal must round into [qmin, qmax] by itself.
    The extremes of a segment are its min and max, so random pairs of them (2M, every binade) and,
    in float16, every positive value as the max over a min of 0 and of -max."""
    if not clamp_free(spec, dtype):
        pytest.skip(f"{spec.bits}-bit codes on {dtype} scales keep the clamp")
    gen = torch.Generator().manual_seed(spec.bits * 7 + len(spec.scheme))
    a, b = random_finite(dtype, 2_000_000, gen), random_finite(dtype, 2_000_000, gen)
    m = min(len(a), len(b))
    pairs = [(torch.minimum(a[:m], b[:m]), torch.maximum(a[:m], b[:m]))]
    if dtype == torch.float16:
        every = torch.arange(0, 0x7C00, dtype=torch.int16).view(torch.float16)  # +0 .. 65504
        pairs += [(torch.zeros_like(every), every), (-every, every)]
    checked = 0
    for lo, hi in pairs:
        span = hi.float() - lo.float()
        lo, hi = lo[torch.isfinite(span)], hi[torch.isfinite(span)]
        for x in (lo, hi):
            q, normal = rounded_quotients(x, lo, hi, spec, dtype)
            q = q[normal]
            checked += q.numel()
            assert q.min().item() >= spec.qmin and q.max().item() <= spec.qmax
    assert checked > 1_000_000


def test_the_bound_fails_where_the_kernel_keeps_the_clamp():
    """The formats left clamped are so for a reason: 8-bit codes on bfloat16 scales (u = 2^-8)
    have quotients past 255.5 among random segments."""
    spec, dtype = QuantSpec(8, "asymmetric", "channel"), torch.bfloat16
    assert not clamp_free(spec, dtype)
    gen = torch.Generator().manual_seed(1)
    a, b = random_finite(dtype, 2_000_000, gen), random_finite(dtype, 2_000_000, gen)
    m = min(len(a), len(b))
    lo, hi = torch.minimum(a[:m], b[:m]), torch.maximum(a[:m], b[:m])
    q, normal = rounded_quotients(hi, lo, hi, spec, dtype)
    assert (q[normal] > spec.qmax).any()


TINY = 2.0 ** -24  # float16's smallest subnormal


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(2, "asymmetric", "group", 32),
                                  QuantSpec(4, "symmetric", "group", 32), QuantSpec(4, "asymmetric", "channel"),
                                  QuantSpec(8, "asymmetric", "group", 32)], ids=str)
def test_a_tile_with_a_subnormal_scale_still_clamps(spec, gen, device):
    """One segment of 0 and 21 * 2^-24 (float16 subnormals) among normal ones: its scale, 21/15 *
    2^-24 for 4 bits, rounds to 2^-24 in float16, so the max's quotient is 21 and must clamp to 15.
    Unclamped, 21 would spill into the neighbouring field of its byte."""
    w = torch.randn(4, 256, generator=gen).to(torch.float16)
    row, cols = 1, slice(64, 96) if spec.granularity == "group" else slice(0, 256)
    tiny = torch.zeros(cols.stop - cols.start)
    top = (spec.qmax * 1.4) * TINY  # a multiple of 2^-24 for these qmax: a float16 subnormal
    tiny[5] = top
    if spec.symmetric:
        tiny[6] = -top
    w[row, cols] = tiny.to(torch.float16)
    scale, _ = qparams_ref(torch.tensor([-top if spec.symmetric else 0.0]), torch.tensor([top]), spec, torch.float16)
    assert float(scale) < torch.finfo(torch.float16).tiny and top / float(scale) > spec.qmax + 0.5  # the clamp acts
    w = w.to(device)
    q = quantize(w, spec)
    ref = quantize_ref(w, spec)
    assert torch.equal(q.codes, ref.codes) and torch.equal(q.scales, ref.scales)
    assert unpack_fields(q.codes, spec.bits, 256)[row, cols.start + 5].item() == spec.qmax + spec.offset
