"""The codebook schemes (spec.py): NF4, NF4 with double-quantized scales, FP8 e4m3. The kernels'
codes equal the reference's bit for bit, every code means the value the format says (the nearest
level or e4m3 value, ties as written), bytes are exact, and the config sweeps them beside the
integer formats. (Odd shapes, poisoned segments and all-zero weights are in test_quantize.py,
test_dequantize.py, test_qmatmul.py and test_edge_cases.py, which sweep these schemes too.)"""

import textwrap

import pytest
import torch

from quantbench.harness.config import ConfigError, load_config
from quantbench.harness.execution.cases import expand
from quantbench.kernels import QuantSpec, dequantize, dequantize_ref, qmatmul, quantize, quantize_ref
from quantbench.kernels.codebooks import scales_of
from quantbench.kernels.packing import unpack_fields
from quantbench.kernels.spec import DQ_CHUNK, FP8_MAX, NF4_LEVELS, NF4_MIDPOINTS, NF4_ZERO_CODE

from test_quantize import assert_same_quantization

CODEBOOK_SPECS = [QuantSpec(4, "nf4", "group", 64), QuantSpec(4, "nf4_dq", "group", 32),
                  QuantSpec(8, "fp8", "channel"), QuantSpec(8, "fp8", "tensor")]
SPEC_IDS = [f"{s.scheme}-{s.granularity}{s.group_size or ''}" for s in CODEBOOK_SPECS]


def e4m3_values() -> torch.Tensor:
    """Every finite float8 e4m3fn value, ascending, -448 .. 448 (-0.0 and 0.0 both)."""
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    values = codes.view(torch.float8_e4m3fn).float()
    return values[values.isfinite()].sort().values


def test_nf4_table_is_qloras():
    """16 ascending levels from -1 to 1 with 0 at index 7 (QLoRA's asymmetric NormalFloat: 7
    negative, 8 positive), and the midpoints between neighbours."""
    levels = torch.tensor(NF4_LEVELS)
    assert len(NF4_LEVELS) == 16 and (levels.diff() > 0).all()
    assert NF4_LEVELS[0] == -1.0 and NF4_LEVELS[-1] == 1.0 and NF4_LEVELS[NF4_ZERO_CODE] == 0.0
    mids = torch.tensor(NF4_MIDPOINTS)
    assert ((mids > levels[:-1]) & (mids < levels[1:])).all()


def test_fp8_codes_round_to_nearest_even_like_torch(device):
    """A per-tensor scale of exactly 1 (the row holds 448, the largest e4m3 value), so the kernel
    encodes the values themselves: every e4m3 value, every midpoint between neighbours (a tie:
    to the even code), and the float32 values just either side of each midpoint."""
    values = e4m3_values()
    mids = (values[:-1].double() + values[1:].double()) / 2
    mids = mids[mids != 0].float()  # (-0.0 + 0.0) / 2
    row = torch.cat([values, mids, mids.nextafter(torch.tensor(float("inf"))),
                     mids.nextafter(torch.tensor(float("-inf"))), torch.tensor([FP8_MAX])])
    w = row.unsqueeze(0).to(device)
    spec = QuantSpec(8, "fp8", "tensor")
    q = quantize(w, spec)
    assert q.scales.item() == 1.0
    assert_same_quantization(q, quantize_ref(w, spec))
    got = q.codes.cpu().view(torch.float8_e4m3fn).float().flatten()
    want = row.to(torch.float8_e4m3fn).float()
    assert torch.equal(got, want), f"first mismatch at {(got != want).nonzero()[:3].flatten().tolist()}"
    # ties went to the even code (last mantissa bit 0)
    tie_codes = q.codes.cpu().flatten()[len(values):len(values) + len(mids)]
    assert ((tie_codes & 1) == 0).all()


def test_nf4_codes_are_the_nearest_level_and_ties_go_down(device):
    """A group whose absmax is 1 (scale 1): each level, each midpoint (a tie: the lower level),
    and the float32 value just above each midpoint (the upper level)."""
    mids = torch.tensor(NF4_MIDPOINTS)
    row = torch.cat([torch.tensor(NF4_LEVELS), mids, mids.nextafter(torch.tensor(2.0))])
    row = torch.cat([row, torch.zeros(64 - row.numel())])
    w = row.unsqueeze(0).to(device)
    spec = QuantSpec(4, "nf4", "group", 64)
    q = quantize(w, spec)
    assert q.scales.item() == 1.0
    assert_same_quantization(q, quantize_ref(w, spec))
    fields = unpack_fields(q.codes.cpu(), 4, 64).flatten()
    assert fields[:16].tolist() == list(range(16))
    assert fields[16:31].tolist() == list(range(15))
    assert fields[31:46].tolist() == list(range(1, 16))


def test_nf4_codes_at_the_encode_tables_cell_edges(device):
    """The kernel finds v's code from its cell of 1/16 (codebooks.nf4_cells); a v at a cell's edge
    may be put in either neighbour by the rounding of v * 16 + 15.5. Each edge and the float32
    values either side of it (the group's absmax 1, so its scale is 1) encode as the reference
    counts midpoints. (nf4_dq's decoded scales put v past +-1: the random nf4_dq cases.)"""
    edges = torch.arange(33, dtype=torch.float32) / 16 - 1  # -1 .. 1
    row = torch.cat([edges, edges[:-1].nextafter(torch.tensor(2.0)), edges[1:].nextafter(torch.tensor(-2.0))])
    w = torch.cat([row, torch.zeros(128 - row.numel())]).reshape(1, 128).to(device)
    spec = QuantSpec(4, "nf4", "group", 128)
    q = quantize(w, spec)
    assert q.scales.item() == 1.0
    assert_same_quantization(q, quantize_ref(w, spec))
    fields = unpack_fields(q.codes.cpu(), 4, 128).flatten()[:row.numel()].long()
    assert torch.equal(fields, (row[:, None] > torch.tensor(NF4_MIDPOINTS)).sum(dim=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nf4_values_are_nearest_levels_on_random_weights(dtype, gen, device):
    w = torch.randn(8, 256, generator=gen).to(dtype)
    spec = QuantSpec(4, "nf4", "group", 64)
    q = quantize(w.to(device), spec)
    assert_same_quantization(q, quantize_ref(w.to(device), spec))
    v = (w.float().reshape(8, 4, 64) / q.scales.cpu().float()[:, :, None]).reshape(8, 256)
    levels = torch.tensor(NF4_LEVELS)
    chosen = levels[unpack_fields(q.codes.cpu(), 4, 256).long()]
    nearest = (v[..., None] - levels).abs().min(dim=-1).values
    assert torch.equal((v - chosen).abs(), nearest)


def test_fp8_error_is_within_half_an_e4m3_step(gen, device):
    """float32 weights: |w - w_hat| <= (2^-4 |w / scale| + 2^-10) * scale, half the spacing of e4m3
    values (3 mantissa bits; subnormals in steps of 2^-9), plus float32 rounding of the product."""
    w = torch.randn(16, 512, generator=gen) * torch.logspace(-3, 3, 16)[:, None]
    spec = QuantSpec(8, "fp8", "channel")
    q = quantize(w.to(device), spec)
    assert_same_quantization(q, quantize_ref(w.to(device), spec))
    w_hat = dequantize(q).cpu()
    s = q.scales.cpu()
    bound = (2 ** -4 * (w / s).abs() + 2 ** -10) * s * (1 + 2 ** -22)
    assert ((w - w_hat).abs() <= bound).all()
    # and it is used: the worst element is more than half of the bound (a coarser step would fail)
    assert ((w - w_hat).abs() / bound).max() > 0.5


@pytest.mark.parametrize("spec", CODEBOOK_SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("value", [3.25, -1e-3])
def test_constant_weights_round_trip(spec, value, device):
    """A constant segment. NF4: the scale is its absmax, so v = +-1, a level, and it round-trips
    exactly (nf4_dq too: every scale is the mean, the chunk scale degenerate, the code 128). FP8:
    the scale absmax / 448 is rounded (in float16, -1e-3 / 448 is even subnormal), so v is only
    near 448, and w_hat is within half an e4m3 step (2^-4 relative, near 448) of w."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        w = torch.full((3, 64), value, dtype=dtype, device=device)
        q = quantize(w, spec)
        assert_same_quantization(q, quantize_ref(w, spec))
        for w_hat in (dequantize(q), dequantize_ref(q)):
            if spec.codebook == "nf4":
                assert torch.equal(w_hat, w), f"{dtype}: {w_hat.flatten()[:4]}"
            else:
                rel = ((w_hat.double() - w.double()).abs() / abs(value)).max().item()
                assert rel <= 2 ** -4 + 2 * torch.finfo(dtype).eps, f"{dtype}: relative error {rel}"


def test_fp8_saturates_at_the_float16_maximum(device):
    """max|w| = 65504: the scale 65504 / 448 rounds up to 146.25 in float16, and 448 * 146.25 =
    65520 would round to inf; it comes out as 65504."""
    w = torch.tensor([[65504.0, -65504.0, 1.0, -300.0]], dtype=torch.float16, device=device)
    spec = QuantSpec(8, "fp8", "channel")
    q = quantize(w, spec)
    assert_same_quantization(q, quantize_ref(w, spec))
    for w_hat in (dequantize(q).cpu(), dequantize_ref(q).cpu()):
        assert w_hat.isfinite().all() and w_hat[0, :2].abs().tolist() == [65504.0, 65504.0]


def test_double_quantized_scales_are_close_to_the_absmax(gen, device):
    """nf4_dq: each decoded scale within half a second-level step of the group's float32 absmax
    (float32 weights, so the decoded scale is not rounded further), the bytes those of the 8-bit
    codes, the chunk scales and the mean, and the weights still the nearest levels of it."""
    n, k, g = 40, 512, 32  # 640 groups: three chunks of 256, the last one short
    w = torch.randn(n, k, generator=gen) * torch.linspace(0.1, 3, n)[:, None]
    spec = QuantSpec(4, "nf4_dq", "group", g)
    q = quantize(w.to(device), spec)
    assert_same_quantization(q, quantize_ref(w.to(device), spec))
    assert q.scales.dtype == torch.uint8 and q.second.chunk_scales.numel() == -(-n * k // g // DQ_CHUNK)
    assert q.nbytes == spec.nbytes(n, k, torch.float32) == n * k // 2 + n * k // g + 4 * 3 + 4
    absmax = w.reshape(n, k // g, g).abs().amax(dim=-1).reshape(-1)
    decoded = scales_of(q).cpu().reshape(-1)
    step = q.second.chunk_scales.cpu().repeat_interleave(DQ_CHUNK)[:absmax.numel()]
    assert ((decoded - absmax).abs() <= step / 2 * (1 + 1e-6) + absmax * 2 ** -23).all()
    nf4 = quantize_ref(w, QuantSpec(4, "nf4", "group", g))
    assert (dequantize_ref(q).cpu() - w).norm() <= 1.05 * (dequantize_ref(nf4) - w).norm()


@pytest.mark.parametrize("case", ["normal", "non-finite", "constant", "all-poisoned", "huge"])
@pytest.mark.parametrize("count", [700, 512, 3])  # chunks of 256: a short last one, whole ones, one short one
def test_scale_codes_kernel_equals_the_pytorch_double_quantization(case, count, gen, device):
    """scale_codes.double_quantize_scales (one kernel after PyTorch's mean, what quantize runs) and
    codebooks.double_quantize (PyTorch ops, what the reference runs): the same codes, chunk scales
    and mean, bit for bit, on first-level scales with NaN and infinities (left out, code 0), a
    constant chunk (chunk scale 1), none finite, and magnitudes whose sum nears float32's largest."""
    from quantbench.kernels.codebooks import double_quantize
    from quantbench.kernels.scale_codes import double_quantize_scales

    scales = torch.rand(count, generator=gen) * 3
    if case == "non-finite":
        scales[::7] = float("nan")
        scales[3::11] = float("inf")
        scales[1] = -float("inf")
    elif case == "constant":
        scales[:] = 0.75
    elif case == "all-poisoned":
        scales[:] = float("nan")
    elif case == "huge":  # large, and still a finite sum (past float32's largest the mean is inf in both)
        scales = scales * 1e35
    scales = scales.reshape(1, count).to(device)
    got_codes, got = double_quantize_scales(scales, torch.float16)
    want_codes, want = double_quantize(scales, torch.float16)
    assert torch.equal(got_codes, want_codes)
    assert torch.equal(got.chunk_scales, want.chunk_scales) and torch.equal(got.mean, want.mean)
    assert got.dtype == want.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nf4_dq_scales_decoded_inside_the_kernels_are_the_references(dtype, gen, device):
    """nf4_dq's 8-bit scales are decoded inside dequantize and both matmul kernels
    (dequantization.segment_scales): the same bits as codebooks.decode_scales, in every dtype,
    with a second-level chunk that starts inside a row (40 rows of 12 groups: scale 256, where
    chunk 1 starts, is row 21's group 4) and a poisoned group (NaN, scale code 0)."""
    n, k, g = 40, 384, 32
    w = (torch.randn(n, k, generator=gen) * torch.linspace(0.1, 3, n)[:, None]).to(dtype)
    poisoned = w.clone()
    poisoned[5, 64:96] = float("nan")
    spec = QuantSpec(4, "nf4_dq", "group", g)
    q = quantize(poisoned.to(device), spec)
    assert q.second.chunk_scales.numel() == 2 and (q.scales.cpu()[5, 2] == 0).item()
    got, want = dequantize(q).cpu(), dequantize_ref(q).cpu()
    assert torch.equal(got.isnan(), want.isnan()) and got[5, 64:96].isnan().all()
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    q = quantize(w.to(device), spec)
    for m in (1, 20, 70):  # the GEMV, the split-K GEMM and the GEMM
        x = torch.randn(m, k, generator=gen).to(dtype).to(device)
        exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
        err = ((qmatmul(x, q).double() - exact).norm() / exact.norm()).item()
        assert err <= 2 * torch.finfo(dtype).eps + k * torch.finfo(torch.float32).eps, (m, err)


@pytest.mark.parametrize("m", [1, 20, 70])  # the GEMV, the split-K GEMM and the GEMM
@pytest.mark.parametrize("spec", [QuantSpec(4, "nf4", "group", 64), QuantSpec(8, "fp8", "channel")],
                         ids=["nf4", "fp8"])
def test_qmatmul_on_codebook_weights_with_odd_n(spec, m, gen, device):
    n, k = 19, 192
    w = torch.randn(n, k, generator=gen).to(device)
    x = torch.randn(m, k, generator=gen).to(device)
    q = quantize_ref(w, spec)
    exact = x.double() @ dequantize_ref(q).double().t()
    err = ((qmatmul(x, q).double() - exact).norm() / exact.norm()).item()
    assert err <= 2 * torch.finfo(torch.float32).eps + k * torch.finfo(torch.float32).eps


def write_config(tmp_path, sweep: str):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\nsweep:\n" + textwrap.indent(textwrap.dedent(sweep), "  "))
    return load_config(path)


def test_a_scheme_axis_mixes_formats_and_collapses_what_cannot_exist(tmp_path):
    cfg = write_config(tmp_path, """\
        op: [quantize]
        bits: [8, 4]
        scheme: [asymmetric, nf4, nf4_dq, fp8]
        granularity: [channel, group]
        group_size: [64]
        N: [4]
        K: [128]
        """)
    formats = {(c.scheme, c.bits, c.granularity) for c in expand(cfg)}
    assert formats == {("asymmetric", b, g) for b in (8, 4) for g in ("channel", "group")} | {
        ("nf4", 4, "group"), ("nf4_dq", 4, "group"), ("fp8", 8, "channel")}


def test_a_codebook_scheme_without_a_grid_point_is_a_config_error(tmp_path):
    cfg = write_config(tmp_path, """\
        op: [quantize]
        bits: [8]
        scheme: [symmetric, nf4]
        granularity: [channel]
        N: [4]
        K: [128]
        """)
    with pytest.raises(ConfigError, match=r"sweep\.scheme: 'nf4' has 4-bit codes with granularity group"):
        expand(cfg)
