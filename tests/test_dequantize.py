"""The Triton dequantizer against its reference, and the round trip's error bound."""

import pytest
import torch

from quantbench.harness.ops.metrics import dequant_close
from quantbench.kernels import BITS, SCHEMES, QuantSpec, QuantizedTensor, dequantize, dequantize_ref, quantize_ref, spec_exists
from quantbench.kernels.references import expand_params
from quantbench.kernels.packing import pack_fields, unpack_fields

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPECS = [QuantSpec(b, s, g, gs) for b in BITS for s in SCHEMES
         for g, gs in (("tensor", None), ("channel", None), ("group", 32), ("group", 128)) if spec_exists(b, s, g)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda v: f"{v.bits}b-{v.scheme[:4]}-{v.granularity}{v.group_size or ''}")
@pytest.mark.parametrize("n,k", [(1, 128), (33, 384)])
def test_dequantize_matches_reference(spec, n, k, gen, device):
    for dtype in DTYPES:
        w = torch.randn(n, k, generator=gen).to(dtype).to(device)
        q = quantize_ref(w, spec)
        got, want = dequantize(q), dequantize_ref(q)
        assert got.dtype == dtype and got.shape == (n, k)
        close = dequant_close(got, want)
        assert close.all(), f"{(~close).sum().item()} differ, first at {(~close).nonzero()[:3].tolist()}"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.codebook == "integer"],  # codebooks: test_codebook_formats.py
                         ids=lambda v: f"{v.bits}b-{v.scheme[:4]}-{v.granularity}{v.group_size or ''}")
def test_round_trip_error_is_at_most_half_a_step(spec, gen):
    """Inside its segment's range every element is rounded to the nearest level: |w - w_hat| is at
    most half a scale (plus float32 rounding)."""
    w = torch.randn(8, 256, generator=gen)
    q = quantize_ref(w, spec)
    err = (dequantize_ref(q) - w).abs()
    half_step = expand_params(q.scales, q) / 2
    assert (err <= half_step * (1 + 1e-5) + 1e-6).all()


@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq"])
def test_nf4_long_rows_take_the_wide_tile(scheme, gen, device):
    """NF4 rows of 2048 columns or more are dequantized in 4 x 2048 tiles (float16 outputs, and
    nf4_dq's in bfloat16 too; NF4 into bfloat16 keeps 16 x 256), matching the reference on a tile
    inside the matrix and on rows past it."""
    from quantbench.kernels import dequantize_choice

    spec = QuantSpec(4, scheme, "group", 64)
    for n in (4, 6):
        w = torch.randn(n, 2048, generator=gen).to(device)
        for dtype in (torch.float16, torch.bfloat16):
            q = quantize_ref(w.to(dtype), spec)
            wide = dtype == torch.float16 or scheme == "nf4_dq"
            tile = "BLOCK_N=4 BLOCK_K=2048" if wide else "BLOCK_N=16 BLOCK_K=256"
            assert dequantize_choice(q, dtype) == f"{tile} num_warps=4"
            close = dequant_close(dequantize(q), dequantize_ref(q))
            assert close.all(), f"{(~close).sum().item()} differ, first at {(~close).nonzero()[:3].tolist()}"
    narrow = quantize_ref(torch.randn(4, 1024, generator=gen).to(torch.float16).to(device), spec)
    assert dequantize_choice(narrow, torch.float16) == "BLOCK_N=16 BLOCK_K=256 num_warps=4"


def test_output_dtype_can_differ_from_the_weight(gen, device):
    w = torch.randn(4, 64, generator=gen, dtype=torch.float16).to(device)
    q = quantize_ref(w, QuantSpec(4, "asymmetric", "group", 32))
    out = dequantize(q, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    assert dequant_close(out, dequantize_ref(q, torch.float32)).all()


# the interpreter computes in numpy, which warns where float32 overflows (as it should here)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
# Not bfloat16 with a zero: at scales near float32's largest, the reference's q * scale in float32
# can overflow where q * scale + zero does not, and the GPU's half route, which rounds the exact
# value once, then differs from it (quantize never makes such scales: their range would overflow)
@pytest.mark.parametrize("spec,dtype", [(QuantSpec(4, "symmetric", "group", 32), torch.float16),
                                        (QuantSpec(4, "symmetric", "group", 32), torch.bfloat16),
                                        (QuantSpec(2, "symmetric", "group", 32), torch.float16),
                                        (QuantSpec(2, "symmetric", "group", 32), torch.bfloat16),
                                        (QuantSpec(4, "asymmetric", "channel"), torch.float16)],
                         ids=lambda v: f"{v.bits}b-{v.scheme[:4]}" if isinstance(v, QuantSpec) else str(v))
def test_values_past_the_dtype_saturate_and_a_nan_scale_stays_nan(spec, dtype, gen, device):
    """Codes whose value passes the output dtype's largest finite magnitude give that magnitude
    (on the GPU the half-precision route rounds them to infinity first, then clamps), and a
    poisoned segment (NaN scale) gives NaN, as the reference does. The values are exact in
    float32 or overflow it alike, so the one rounding of the half route and the reference's two
    agree bit for bit."""
    n, k = 8, 64
    biggest = torch.finfo(dtype).max
    scale = 0.6 * biggest  # code - offset = -2 (int2) already passes the largest value
    fields = torch.randint(0, 1 << spec.bits, (n, k), generator=gen)
    segments = 1 if spec.granularity == "channel" else k // spec.group_size
    scales = torch.full((n, segments), scale).to(dtype)
    scales[3, -1] = float("nan")
    zeros = None if spec.symmetric else torch.full((n, segments), -scale / 2).to(dtype)
    q = QuantizedTensor(pack_fields(fields, spec.bits).to(device), scales.to(device),
                        None if zeros is None else zeros.to(device), spec, (n, k))
    got, want = dequantize(q).cpu(), dequantize_ref(q).cpu()
    assert (want.abs() == biggest).any() and want.isnan().any()  # the case reaches both
    same = (got == want) | (got.isnan() & want.isnan())
    assert same.all(), f"{(~same).sum().item()} differ, first at {(~same).nonzero()[:3].tolist()}"


def test_packing_order_is_little_end_first():
    """Element k sits at bit offset (k % (8 // bits)) * bits of byte k // (8 // bits)."""
    fields = torch.tensor([[1, 2, 3, 0, 3]])
    packed = pack_fields(fields, 2)
    assert packed.tolist() == [[1 | 2 << 2 | 3 << 4 | 0 << 6, 3]]
    assert pack_fields(torch.tensor([[0xA, 0x5, 0xF]]), 4).tolist() == [[0x5A, 0x0F]]
    assert torch.equal(unpack_fields(packed, 2, 5), fields.to(torch.int32))


def test_wrong_codes_shape_is_refused(device):
    q = quantize_ref(torch.randn(4, 64).to(device), QuantSpec(4, "symmetric", "channel"))
    bad = type(q)(q.codes[:, :16].contiguous(), q.scales, q.zeros, q.spec, q.shape)
    with pytest.raises(ValueError, match=r"codes must be \[N, ceil\(K \* bits / 8\)\] = \[4, 32\]"):
        dequantize(bad)
