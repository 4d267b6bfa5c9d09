"""The Triton quantizer against its PyTorch reference: identical codes, scales and zeros."""

import pytest
import torch

from quantbench.harness.ops.metrics import weight_error
from quantbench.kernels import (BITS, GROUP_SIZES, INTEGER_SCHEMES, SCHEMES, QuantSpec, dequantize_ref, quantize,
                                quantize_ref, spec_exists)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Odd shapes on purpose: one row, K not a multiple of any block or of 8 // bits, N not a multiple
# of any block.
ODD_SHAPES = [(1, 7), (33, 130), (5, 1)]
GROUP_SHAPES = [(3, 256), (17, 512)]


def specs_for(k):
    for bits in BITS:
        for scheme in SCHEMES:
            for gran in ("tensor", "channel"):
                if spec_exists(bits, scheme, gran):
                    yield QuantSpec(bits, scheme, gran)
            for g in GROUP_SIZES:
                if k % g == 0 and spec_exists(bits, scheme, "group"):
                    yield QuantSpec(bits, scheme, "group", g)


CASES = [(n, k, spec) for n, k in ODD_SHAPES + GROUP_SHAPES for spec in specs_for(k)]


def assert_same_quantization(a, b):
    for part in ("codes", "scales", "zeros"):
        x, y = getattr(a, part), getattr(b, part)
        if y is None:
            assert x is None
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, part
        bad = (x != y).nonzero()
        assert bad.numel() == 0, f"{part}: {len(bad)} differ, first at {bad[:3].tolist()}: " \
                                 f"{x[tuple(bad[0])].item()} vs {y[tuple(bad[0])].item()}"


@pytest.mark.parametrize("n,k,spec", CASES, ids=lambda v: str(v) if not isinstance(v, QuantSpec) else
                         f"{v.bits}b-{v.scheme[:4]}-{v.granularity}{v.group_size or ''}")
def test_codes_equal_reference(n, k, spec, gen, device):
    for dtype in DTYPES:
        w = (torch.randn(n, k, generator=gen) * 2).to(dtype).to(device)
        assert_same_quantization(quantize(w, spec), quantize_ref(w, spec))


@pytest.mark.parametrize("n,k", [(40, 2500), (3, 8200)])
@pytest.mark.parametrize("spec", [QuantSpec(b, s, g) for b in (8, 4) for s in SCHEMES for g in ("tensor", "channel")
                                  if spec_exists(b, s, g)],
                         ids=str)
def test_long_rows_and_many_tiles(n, k, spec, gen, device):
    """Rows longer than one tile (per-channel scales looped over K) and per-tensor scales reduced
    from many partial minima and maxima."""
    w = torch.randn(n, k, generator=gen).to(torch.bfloat16).to(device)
    assert_same_quantization(quantize(w, spec), quantize_ref(w, spec))


@pytest.fixture
def retile(monkeypatch):
    """Sets one of quantize_tiles' constants for a test. quantize keeps its launches per format and
    shape (quantize_tiles.quantize_plan): the kept ones are dropped when a constant is set and
    after the test, so that every call is planned with the constants in force."""
    from quantbench.kernels import quantize_tiles

    def set_constant(name, value):
        monkeypatch.setattr(quantize_tiles, name, value)
        quantize_tiles.quantize_plan.cache_clear()
    yield set_constant
    quantize_tiles.quantize_plan.cache_clear()


@pytest.mark.parametrize("chunk", [4, 8, 64])
@pytest.mark.parametrize("spec", [QuantSpec(2, "asymmetric", "group", 32), QuantSpec(4, "symmetric", "group", 128),
                                  QuantSpec(4, "nf4", "group", 64), QuantSpec(8, "asymmetric", "group", 64)], ids=str)
def test_codes_do_not_depend_on_how_a_group_is_chunked(spec, chunk, gen, device, retile):
    """The kernel holds a group as chunks (quantize_tiles.GROUP_CHUNK, ONE_WARP_CHUNK on one-warp
    tiles; at most half a group): any chunk length, down to one byte's worth of fields, gives the
    reference's codes, on tiles inside the matrix and on masked ones (N and K not multiples of the
    tile)."""
    from quantbench.kernels.quantize_tiles import quantize_plan

    retile("GROUP_CHUNK", max(spec.per_byte, chunk))
    retile("ONE_WARP_CHUNK", max(spec.per_byte, chunk))
    plan = quantize_plan(spec, 8, 512, torch.float16, 512)
    assert plan.constants["CHUNK"] == min(spec.group_size // 2, max(spec.per_byte, chunk))
    for n, k in ((8, 512), (5, 3 * spec.group_size)):
        w = torch.randn(n, k, generator=gen).to(torch.float16).to(device)
        assert_same_quantization(quantize(w, spec), quantize_ref(w, spec))


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 128), QuantSpec(2, "symmetric", "group", 32),
                                  QuantSpec(4, "asymmetric", "group", 32), QuantSpec(8, "asymmetric", "group", 32),
                                  QuantSpec(8, "asymmetric", "group", 128), QuantSpec(8, "symmetric", "group", 256)],
                         ids=str)
def test_large_weights_take_the_one_warp_tile_and_the_same_codes(spec, gen, device, retile):
    """Per-group codes of large weights are quantized on one warp, 1024 columns a tile: 4- and
    2-bit codes (512 columns for asymmetric groups under 128 columns), 8-bit codes in groups of 128
    or more; 8-bit codes in smaller groups and small weights keep the 2-warp tile of 512. The
    thresholds lowered so that small weights take it, the codes and scales are the reference's, on
    tiles inside the matrix and on masked ones."""
    from quantbench.kernels import quantize_tiles

    small = quantize_tiles.quantize_tiling(spec, 2048, 2048)
    retile("SUB_BYTE_GROUP_MIN_ELEMS", 0)
    retile("BYTE_GROUP_MIN_ELEMS", 0)
    _, block_n, block_k, _, chunk, warps = quantize_tiles.quantize_tiling(spec, 2048, 2048)
    one_warp = spec.bits < 8 or spec.group_size >= 128
    assert warps == (1 if one_warp else 2) and small[-1] == 2
    # sub-byte codes on one warp hold a segment as chunks of 16 columns, the rest of 32 (at most half a group)
    widest = quantize_tiles.ONE_WARP_CHUNK if spec.bits < 8 else quantize_tiles.GROUP_CHUNK
    assert chunk == min(spec.group_size // 2, widest) and small[-2] == min(spec.group_size // 2, 32)
    assert block_k == (1024 if one_warp and (spec.symmetric or spec.group_size >= 128) else 512)
    assert block_n * block_k == 2048
    for n, k in ((4, 2048), (5, 3 * spec.group_size + 1024)):
        w = torch.randn(n, k, generator=gen).to(torch.float16).to(device)
        assert_same_quantization(quantize(w, spec), quantize_ref(w, spec))


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "tensor"), QuantSpec(2, "symmetric", "group", 32),
                                  QuantSpec(8, "asymmetric", "channel")], ids=str)
def test_shapes_and_dtypes_of_outputs(spec, gen, device):
    w = torch.randn(6, 64, generator=gen, dtype=torch.float16).to(device)
    q = quantize(w, spec)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (6, 64 * spec.bits // 8)
    assert q.scales.dtype == torch.float16 and tuple(q.scales.shape) == spec.scales_shape(6, 64)
    assert (q.zeros is None) == spec.symmetric
    assert q.nbytes == spec.nbytes(6, 64, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(8, "asymmetric", "group", 64),
                                  QuantSpec(4, "symmetric", "group", 32), QuantSpec(4, "asymmetric", "channel"),
                                  QuantSpec(4, "nf4_dq", "group", 64)], ids=str)
def test_the_layout_of_the_scales(spec, dtype, gen, device):
    """quantize and quantize_ref write asymmetric per-group 2-byte scales and zeros as views of one
    group-major [groups, N, 2] buffer, each scale beside its zero (spec.py, Storage: what the
    matmul kernels read as 32-bit words), and every other format's row-major."""
    from quantbench.kernels.spec import are_scale_zero_pairs
    n, k = 24, 128
    w = torch.randn(n, k, generator=gen).to(dtype).to(device)
    pairs = spec.scheme == "asymmetric" and spec.granularity == "group" and dtype != torch.float32
    for q in (quantize(w, spec), quantize_ref(w, spec)):
        assert are_scale_zero_pairs(q.scales, q.zeros) == pairs
        if pairs:
            groups = k // spec.group_size
            assert q.scales.stride() == q.zeros.stride() == (2, 2 * n)
            buffer = torch.as_strided(q.scales, (groups, n, 2), (2 * n, 2, 1))
            assert torch.equal(buffer[..., 0], q.scales.t()) and torch.equal(buffer[..., 1], q.zeros.t())
        else:
            assert q.scales.is_contiguous() and (q.zeros is None or q.zeros.is_contiguous())
        assert q.nbytes == spec.nbytes(n, k, dtype)  # the buffer holds the scales' and zeros' bytes, no more


@pytest.mark.parametrize("scheme", INTEGER_SCHEMES)  # the codebook schemes': test_codebook_formats.py
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
@pytest.mark.parametrize("value", [0.0, 3.25, -1e-3])
def test_constant_tensor_round_trips_without_nan(scheme, granularity, value, device):
    spec = QuantSpec(4, scheme, granularity, 32 if granularity == "group" else None)
    w = torch.full((4, 64), value, device=device)
    q = quantize(w, spec)
    assert_same_quantization(q, quantize_ref(w, spec))
    w_hat = dequantize_ref(q)
    assert not w_hat.isnan().any()
    if scheme == "asymmetric" or value == 0.0:
        assert torch.equal(w_hat, w)  # zero range: every code is 0 and w_hat is the stored minimum
    else:
        torch.testing.assert_close(w_hat, w, rtol=torch.finfo(torch.float32).eps * 2, atol=0)


def test_scale_that_underflows_the_storage_dtype_is_not_zero(device):
    """A range so small that range / 15 is 0 in float16: the stored scale is 1 and w_hat = min."""
    w = torch.tensor([[0.0, 1e-7, 2e-7, 0.0]], dtype=torch.float16, device=device)
    spec = QuantSpec(4, "asymmetric", "tensor")
    q = quantize(w, spec)
    assert_same_quantization(q, quantize_ref(w, spec))
    assert q.scales.item() == 1.0
    assert torch.isfinite(dequantize_ref(q)).all()


def test_ties_round_half_to_even(device):
    """Values exactly halfway between two codes go to the even code (0.5 -> 0, 1.5 -> 2, 2.5 -> 2)."""
    # range [0, 15] with 4 bits: scale 1, so w / scale lands on the .5 ties exactly
    w = torch.tensor([[0.0, 0.5, 1.5, 2.5, 3.5, 15.0, 14.5, 13.5]], device=device)
    spec = QuantSpec(4, "asymmetric", "tensor")
    q = quantize(w, spec)
    assert_same_quantization(q, quantize_ref(w, spec))
    assert dequantize_ref(q).flatten().tolist() == [0, 0, 2, 2, 4, 15, 14, 14]


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_symmetric_ties_round_half_to_even(granularity, device):
    """The symmetric codes' offset (8 for 4 bits) is added in the same rounding as the code
    (exact_math.rounded_int): ties still go to the even code on both sides of zero."""
    w = torch.tensor([[7.0, -7.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 6.5, -6.5, 3.5, -3.5]], device=device)
    spec = QuantSpec(4, "symmetric", granularity)  # max|w| / 7: scale 1
    q = quantize(w, spec)
    assert_same_quantization(q, quantize_ref(w, spec))
    assert dequantize_ref(q).flatten().tolist() == [7, -7, 0, 0, 2, -2, 2, -2, 6, -6, 4, -4]


def test_cpu_tensor_is_refused_on_the_gpu(device):
    if device.type != "cuda":
        pytest.skip("only meaningful when the kernels are compiled for a GPU")
    with pytest.raises(ValueError, match="w must be on a CUDA device"):
        quantize(torch.zeros(2, 64), QuantSpec(8, "symmetric", "channel"))


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(4, 8, dtype=torch.int32), "w must have dtype"),
    (torch.zeros(8), "w must be 2-D"),
    (torch.zeros(8, 4).t(), "w must be contiguous along its last axis"),
    (torch.zeros(0, 4), "w must not be empty"),
])
def test_launcher_names_the_bad_tensor(bad, match, device):
    with pytest.raises((TypeError, ValueError), match=match):
        quantize(bad.to(device), QuantSpec(8, "symmetric", "channel"))


def test_group_size_must_divide_k(device):
    for _ in range(2):  # refused on every call, not only on the first of a shape (quantize_plan)
        with pytest.raises(ValueError, match="group_size 64 must divide K = 96"):
            quantize(torch.zeros(2, 96, device=device), QuantSpec(4, "symmetric", "group", 64))


def test_seed_notebook_per_tensor_experiment():
    """The reference reproduces the seed notebook's per-tensor min-max numbers on its own
    experiment: torch.manual_seed(42); W = randn(1000, 1000) * 2; 8- and 4-bit."""
    torch.manual_seed(42)
    w = torch.randn(1000, 1000) * 2

    def seed_quantize(tensor, levels):  # the notebook's quantize_to_int8 / _int4, verbatim math
        min_val, max_val = tensor.min(), tensor.max()
        scale = (max_val - min_val) / levels
        zero_point = min_val
        q = torch.round((tensor - zero_point) / scale).clamp(0, levels).to(torch.uint8)
        return q, scale, zero_point

    for bits, levels in ((8, 255.0), (4, 15.0)):
        q_seed, scale_seed, zero_seed = seed_quantize(w, levels)
        w_seed = q_seed.float() * scale_seed + zero_seed
        q = quantize_ref(w, QuantSpec(bits, "asymmetric", "tensor"))
        assert q.scales.item() == scale_seed.item() and q.zeros.item() == zero_seed.item()
        w_hat = dequantize_ref(q)
        torch.testing.assert_close(w_hat, w_seed, rtol=0, atol=0)
        # uniform rounding error has variance scale^2 / 12: the textbook check on the seed's MSE
        mse = torch.mean((w - w_hat) ** 2)
        assert torch.isclose(mse, scale_seed ** 2 / 12, rtol=0.05)
        # the harness's metrics equal the seed's calculate_quantization_error (computed in float32)
        ours = weight_error(w, w_hat)
        seed_snr = 10 * torch.log10(torch.mean(w ** 2) / mse)
        assert ours["mse"] == pytest.approx(mse.item(), rel=1e-5)
        assert ours["mae"] == pytest.approx(torch.mean(torch.abs(w - w_hat)).item(), rel=1e-5)
        assert ours["max_abs_err"] == pytest.approx(torch.max(torch.abs(w - w_hat)).item(), rel=1e-6)
        assert ours["snr_db"] == pytest.approx(seed_snr.item(), abs=1e-3)
