"""The GPU-only fast forms, checked bit for bit where the interpreter runs the plain forms instead.

- exact_math.divide: a quotient by multiplication and two corrections, against the GPU's own
  correctly rounded division (PyTorch's), on quotients near every rounding boundary the formats
  have (integer halves, e4m3 steps, NF4 midpoints), on random ones, and with scales outside the
  range where the fast form holds (brought into it by a power of two).
- field_ptx.int_word_fields: int4 and int2 words split into the bits of 2^23 + field by
  prmt, for every byte at every word position; through the GEMV against float64.
- field_ptx.half_fields: the GEMMs' dequantization of int4 and int2 bytes in float16 and
  bfloat16, two elements an instruction, against the exact value rounded once.
- exact_math.round_to into bfloat16: the GPU's conversion against the integer rounding of the
  bits the interpreter runs (bfloat16_bits_rounded), on every exponent at and around every tie.
"""

import pytest
import torch
import triton
import triton.language as tl

from quantbench.kernels import QuantSpec, dequantize_ref, qmatmul, quantize, quantize_ref
from quantbench.kernels.codebooks import scales_of
from quantbench.kernels.field_ptx import half_fields, int_word_fields
from quantbench.kernels.exact_math import bfloat16_bits_rounded, divide, round_to
from quantbench.kernels.spec import NF4_MIDPOINTS

CUDA = torch.device("cuda")
ROWS, COLS = 64, 256


@triton.jit
def divide_kernel(a_ptr, s_ptr, q_ptr, SAFE_RANGE: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """q[ROWS, COLS] = a / s[:, None] through divide(), one program per tile of 8 rows."""
    rows = tl.program_id(0) * 8 + tl.arange(0, 8)
    cols = tl.arange(0, COLS)
    a = tl.load(a_ptr + rows[:, None] * COLS + cols[None, :])
    s = tl.load(s_ptr + rows)
    tl.store(q_ptr + rows[:, None] * COLS + cols[None, :], divide(a, s[:, None], SAFE_RANGE))


def fast_divide(a: torch.Tensor, s: torch.Tensor, safe_range: bool = False) -> torch.Tensor:
    q = torch.empty_like(a)
    divide_kernel[(a.shape[0] // 8,)](a, s, q, SAFE_RANGE=safe_range, ROWS=a.shape[0], COLS=a.shape[1])
    return q


def near(values: torch.Tensor, ulps: int) -> torch.Tensor:
    """float32 values and their neighbours up to `ulps` units in the last place either way."""
    bits = values.float().view(torch.int32)
    return torch.stack([(bits + d).view(torch.float32) for d in range(-ulps, ulps + 1)], dim=-1).reshape(-1)


def boundaries() -> torch.Tensor:
    """Quotients where a format's code changes: integer halves up to 256, e4m3's midpoints
    (subnormal steps of 2^-9 and each binade's), NF4's midpoints; each with its neighbours."""
    halves = torch.arange(-256, 256, dtype=torch.float64) + 0.5
    e4m3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).double()
    e4m3 = e4m3[e4m3.isfinite()].unique().sort().values
    e4m3_mid = (e4m3[1:] + e4m3[:-1]) / 2
    nf4_mid = torch.tensor(NF4_MIDPOINTS, dtype=torch.float64)
    return near(torch.cat([halves, e4m3_mid, nf4_mid]).float(), 3)


def assert_bitwise(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    bad = (~same).nonzero()
    assert bad.numel() == 0, f"{what}: {len(bad)} quotients differ, first {bad[:3].tolist()}"


@pytest.mark.parametrize("safe_range", [False, True])
def test_divide_rounds_as_division_near_every_code_boundary(safe_range):
    gen = torch.Generator().manual_seed(0)
    # scales: random float16 values (what SAFE_RANGE promises) or random float32 over a wide range
    if safe_range:
        s = (torch.rand(ROWS, generator=gen) * 8 + 1e-3).half().float()
    else:
        s = torch.exp2(torch.randint(-70, 70, (ROWS,), generator=gen).float()) * (1 + torch.rand(ROWS, generator=gen))
    v = boundaries()
    v = v[torch.randint(0, len(v), (ROWS, COLS), generator=gen)]
    a = (v * s[:, None]).float()  # a / s lands on, or an ulp or so from, each boundary
    a, s = a.to(CUDA), s.to(CUDA)
    assert_bitwise(fast_divide(a, s, safe_range), a / s[:, None], "boundaries")


def test_divide_rounds_as_division_on_random_operands():
    gen = torch.Generator().manual_seed(1)
    s = torch.exp2(torch.randint(-79, 79, (ROWS,), generator=gen).float()) * (1 + torch.rand(ROWS, generator=gen))
    a = torch.randn(ROWS, COLS, generator=gen) * s[:, None] * torch.exp2(torch.randint(-12, 9, (ROWS, COLS),
                                                                                         generator=gen).float())
    a, s = a.to(CUDA), s.to(CUDA)
    assert_bitwise(fast_divide(a, s), a / s[:, None], "random")


def test_divide_falls_back_where_the_fast_form_does_not_hold():
    """Scales of 2^-100, 2^-126 (subnormal reciprocal range), 2^100 and others out of range in
    some tiles: those are brought into range by a power of two, the dividends with them, and
    agree. In every tile zeros keep their sign and NaN stays NaN; infinities only where the scale
    is NaN (the one place quantize lets them reach divide: a finite scale has finite dividends,
    which the row of 3e38 keeps to float32's largest)."""
    gen = torch.Generator().manual_seed(2)
    s = torch.exp2(torch.randint(-20, 20, (ROWS,), generator=gen).float())
    s[::8] = torch.tensor([2.0**-100, 2.0**-126, 2.0**100, 1e-45, 3e38, 1.0, float("nan"), 0.5])
    a = (torch.randn(ROWS, COLS, generator=gen) * s[:, None] * 7).clamp(-3.4e38, 3.4e38)
    a[::8][:, 3:9] = torch.tensor([1e-30, -1e-30, 1e-44, -1e-44, 2.0**-126, -(2.0**-149)])  # tiny quotients, signed
    a[:, :3] = torch.tensor([0.0, -0.0, float("nan")])
    a[s.isnan(), 3] = float("inf")
    a, s = a.to(CUDA), s.to(CUDA)
    assert_bitwise(fast_divide(a, s), a / s[:, None], "out of range")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 128), QuantSpec(8, "symmetric", "channel"),
                                  QuantSpec(2, "asymmetric", "tensor"), QuantSpec(8, "fp8", "channel"),
                                  QuantSpec(4, "nf4", "group", 64), QuantSpec(4, "nf4_dq", "group", 64)])
def test_quantize_codes_equal_the_reference_near_boundaries(spec, dtype):
    """Most weights put where they divide (by the scales of a first quantization) to within a few
    ulps of a boundary of the format's rounding: the codes equal the reference's, which divides
    with PyTorch. (The segments' ranges move a little when the weights do, so the quotients land
    near the boundaries, not on them; divide() is checked on them exactly above.)"""
    gen = torch.Generator().manual_seed(3)
    n, k = 64, 1024
    w = torch.randn(n, k, generator=gen).to(dtype)
    first = quantize_ref(w, spec)

    def per_element(t: torch.Tensor) -> torch.Tensor:
        return t.float().repeat_interleave(k // t.shape[1], dim=1)

    v = boundaries()
    v = v[torch.randint(0, len(v), (n, k), generator=gen)]
    if spec.codebook == "integer":
        v = v.clamp(spec.qmin, spec.qmax)
    near_boundary = v * per_element(scales_of(first)) + (0 if first.zeros is None else per_element(first.zeros))
    w = torch.where(torch.rand(n, k, generator=gen) < 0.7, near_boundary.to(dtype), w)
    got, want = quantize(w.to(CUDA), spec), quantize_ref(w.to(CUDA), spec)
    for part in ("codes", "scales", "zeros"):
        x, y = getattr(got, part), getattr(want, part)
        assert (x is None) == (y is None), part
        if x is not None:
            assert torch.equal(x, y), part


def every_byte_codes(rows: int, cols_bytes: int) -> torch.Tensor:
    """uint8 codes [rows, cols_bytes] that hold every byte value at every position of a word."""
    values = torch.arange(rows * cols_bytes) % 256
    return (values + torch.arange(rows * cols_bytes) // 256).remainder(256).to(torch.uint8).reshape(rows, cols_bytes)


@triton.jit
def word_fields_kernel(words_ptr, out_ptr, BITS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = int_word_fields(tl.load(words_ptr + offs), BITS)
    for j in tl.static_range(32 // BITS):
        tl.store(out_ptr + offs * (32 // BITS) + j, v[j].to(tl.float32, bitcast=True))


@pytest.mark.parametrize("bits", [4, 2])
def test_int_word_fields_give_every_field_at_every_position(bits):
    words = every_byte_codes(64, 1024).view(torch.int32).reshape(-1).to(CUDA)
    fields = 32 // bits
    out = torch.empty(words.numel() * fields, dtype=torch.float32, device=CUDA)
    word_fields_kernel[(words.numel() // 256,)](words, out, BITS=bits, BLOCK=256)
    w = words.cpu().view(torch.uint8).to(torch.int64)
    want = torch.stack([(w >> (bits * s)) & ((1 << bits) - 1) for s in range(8 // bits)], dim=-1).reshape(-1)
    assert torch.equal(out.cpu(), want.to(torch.float32) + 2.0 ** 23)


@triton.jit
def half_fields_kernel(bytes_ptr, scales_ptr, zeros_ptr, out_ptr, OFFSET: tl.constexpr, BITS: tl.constexpr,
                       BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = half_fields(tl.load(bytes_ptr + offs), tl.load(scales_ptr + offs), tl.load(zeros_ptr + offs), OFFSET, BITS,
                    scales_ptr.dtype.element_ty)
    for j in tl.static_range(8 // BITS):
        tl.store(out_ptr + offs * (8 // BITS) + j, v[j])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bits,offset", [(4, 0), (4, 8), (2, 0), (2, 2)])
def test_half_fields_round_once_for_every_field_at_every_position(bits, offset, dtype):
    """The GEMMs' half-precision dequantization: (field - offset) * scale + zero for every byte
    value at every position of a 4-byte pack, equal bit for bit to the exact value rounded once."""
    gen = torch.Generator().manual_seed(14)
    codes = every_byte_codes(64, 1024).reshape(-1)
    scales = (torch.rand(codes.numel(), generator=gen) * 0.1 + 1e-3).to(dtype)
    zeros = (torch.randn(codes.numel(), generator=gen) * 0.5).to(dtype)
    fields = 8 // bits
    out = torch.empty(codes.numel() * fields, dtype=dtype, device=CUDA)
    half_fields_kernel[(codes.numel() // 256,)](codes.to(CUDA), scales.to(CUDA), zeros.to(CUDA), out, OFFSET=offset,
                                                BITS=bits, BLOCK=256)
    c = codes.to(torch.int64)
    q = torch.stack([(c >> (bits * j)) & ((1 << bits) - 1) for j in range(fields)], dim=-1) - offset
    # exact in float64 (an 11- or 8-bit scale times a small integer, plus a zero), then one rounding
    want = (q.double() * scales.double()[:, None] + zeros.double()[:, None]).to(dtype).reshape(-1)
    got = out.cpu()
    bad = (got.view(torch.int16) != want.view(torch.int16)).nonzero()
    assert bad.numel() == 0, f"{len(bad)} of {got.numel()} differ, first at {bad[:3].tolist()}"


G128 = QuantSpec(4, "asymmetric", "group", 128)


@pytest.mark.parametrize("spec,dtype", [(G128, torch.float16), (G128, torch.bfloat16), (G128, torch.float32),
                                        (QuantSpec(4, "symmetric", "channel"), torch.float16),
                                        (QuantSpec(2, "asymmetric", "group", 64), torch.float16),
                                        (QuantSpec(4, "asymmetric", "tensor"), torch.float16)], ids=str)
def test_integer_gemv_over_words_matches_float64(spec, dtype):
    gen = torch.Generator().manual_seed(6)
    n, k = 192, 1024
    w = torch.randn(n, k, generator=gen).to(dtype).to(CUDA)
    x = torch.randn(1, k, generator=gen).to(dtype).to(CUDA)
    q = quantize(w, spec)
    w_hat = dequantize_ref(q, torch.float32).double()
    want = x.double() @ w_hat.t()
    got = qmatmul(x, q).double()
    # one rounding to the output dtype, plus the float32 sum's error (a few ulps of sum |x w|); a
    # single field decoded wrong moves y by ~|x| * scale, ~0.3 here, over 10x this bound in float16
    # and float32
    tol = torch.finfo(dtype).eps * want.abs() + 2.0 ** -18 * (x.double().abs() @ w_hat.abs().t())
    assert ((got - want).abs() <= tol).all(), ((got - want).abs() / tol).max()


@triton.jit
def bfloat16_kernel(x_ptr, gpu_ptr, bits_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    tl.store(gpu_ptr + offs, round_to(x, tl.bfloat16))
    tl.store(bits_ptr + offs, bfloat16_bits_rounded(x))


def test_round_to_bfloat16_is_the_interpreters_rounding_bit_for_bit():
    """Every sign and exponent (subnormals, the largest finite values, inf, NaN), the mantissa's low
    16 bits at and around the tie with both parities of the bit above, and random patterns: the
    GPU's cvt.rn and the integer rounding give the same float32 bits (NaN for NaN)."""
    sign_exp = torch.arange(512, dtype=torch.int64) << 23
    high = torch.tensor([0, 1 << 16, 0x3F << 16, 0x7F << 16], dtype=torch.int64)  # the kept mantissa bits
    low = torch.tensor([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=torch.int64)
    patterns = (sign_exp[:, None, None] + high[None, :, None] + low[None, None, :]).reshape(-1)
    patterns = torch.cat([patterns, torch.randint(0, 1 << 32, (1 << 20,), dtype=torch.int64)])
    block = 1024
    patterns = torch.cat([patterns, torch.zeros((-len(patterns)) % block, dtype=torch.int64)])
    x = (patterns - ((patterns >= 1 << 31).long() << 32)).to(torch.int32).view(torch.float32).to(CUDA)
    gpu, bits = torch.empty_like(x), torch.empty_like(x)
    bfloat16_kernel[(len(x) // block,)](x, gpu, bits, BLOCK=block)
    assert torch.equal(gpu.isnan(), x.isnan()) and torch.equal(bits.isnan(), x.isnan())
    ok = ~x.isnan()
    assert torch.equal(gpu[ok].view(torch.int32), bits[ok].view(torch.int32))
    assert torch.equal(gpu[ok], x[ok].to(torch.bfloat16).float())  # and PyTorch's own rounding
