"""The quantization format shared by every kernel and reference: what a code means and how it is stored.

A weight matrix ``W`` is ``[N, K]`` (N output channels, K the reduction axis).

Schemes
    ``asymmetric``: the seed notebook's min-max scheme. ``scale = (max - min) / (2**bits - 1)``,
    ``zero = min`` (a float zero point), ``q = round((w - zero) / scale)`` clamped to
    ``[0, 2**bits - 1]``, ``w_hat = q * scale + zero``.
    ``symmetric``: absmax with signed codes. ``scale = max|w| / (2**(bits-1) - 1)``,
    ``q = round(w / scale)`` clamped to ``[-2**(bits-1), 2**(bits-1) - 1]``, ``w_hat = q * scale``.

    Rounding is half to even. The arithmetic is float32 throughout: ``scale`` is computed in float32,
    rounded to the storage dtype, and the *stored* scale and zero are what the codes are computed
    from, so a kernel and a reference that follow this contract produce identical codes.

Granularity (which elements share one scale)
    ``tensor``: all of W; scales ``[1, 1]``. ``channel``: one row of W; scales ``[N, 1]``.
    ``group``: ``group_size`` consecutive elements of a row; scales ``[N, K // group_size]``.

Storage
    Scales and zeros are stored in the input's dtype (float32, float16 or bfloat16); zeros only for
    the asymmetric scheme. Codes are unsigned ``bits``-wide fields: the asymmetric code itself, or
    the symmetric code plus ``2**(bits-1)`` (offset binary). Fields are packed into ``uint8`` along
    K, ``8 // bits`` per byte, little end first: element ``k`` of a row sits in byte ``k // (8 //
    bits)`` at bit offset ``(k % (8 // bits)) * bits``. A row has ``ceil(K * bits / 8)`` bytes; the
    unused fields of its last byte are zero.
    Scales and zeros are ``[N, groups]`` tensors of any strides (zeros with the scales' strides).
    ``quantize`` and ``quantize_ref`` write them row-major (``.contiguous()`` gives that layout),
    except asymmetric per-group scales of 2 bytes (float16, bfloat16): those as *scale+zero
    pairs*, one ``[groups, N, 2]`` buffer, group-major, each scale beside its zero, of which
    ``scales`` and ``zeros`` are views (strides ``(2, 2N)``; ``scale_zero_pairs``). The matmul
    kernels read a scale and its zero there as one 32-bit word, a tile's rows side by side; for
    scales laid out otherwise they keep a copy in that layout (kernels/prepared.py). Every kernel
    and reference reads either; nf4_dq's 8-bit scale codes are row-major.

Degenerate ranges
    Where the stored scale would be zero (a constant or all-zero segment, or a range so small that
    the scale underflows the storage dtype), the stored scale is 1. Every code is then 0 (or the
    symmetric zero), and the segment round-trips to ``zero`` (= its minimum) exactly: never a NaN.
    A single element is a segment like any other (asymmetric: it round-trips exactly).

Non-finite values (NaN, +Inf, -Inf) poison their segment, and only it
    A segment holding a NaN or an infinity has no usable range: its stored scale (and zero, when
    asymmetric) is NaN and its codes are 0 (zero bytes), so it dequantizes to NaN; every other
    segment quantizes as if it were not there. The rule is "the float32 scale is not finite", which
    also covers a finite range wider than float32 (``max - min`` overflows: only float32 or
    bfloat16 values beyond about 1.7e38). NaN's bit pattern is not part of the contract. The
    launchers take ``check_finite=True`` to raise a ValueError naming the first poisoned segment
    instead (cost: one read of the scales and one device sync, hence off by default); the harness
    refuses non-finite weights when it loads them. Why poison rather than always raise: it is free
    in the kernel (no extra pass over W, no sync), it keeps a bad value local and visible, as
    PyTorch's own ops do, and it is the same in kernel and reference by construction.

Overflow near the dtype's maximum
    A stored scale never overflows its dtype (the weight's): symmetric, ``max|w| / qmax <= max|w|``;
    asymmetric, ``(max - min) / qmax <= 2 * dtype_max / 3``. What can overflow is the dequantized
    value: the scale is rounded to nearest, so ``q * scale + zero`` may pass the largest finite
    value (float16, 8-bit symmetric, max|w| = 65504: scale 516, 127 * 516 = 65532, which rounds to
    inf). Dequantization therefore saturates at the output dtype's largest finite magnitude
    (``torch.finfo(dtype).max``) before rounding; NaN stays NaN.

Subnormals
    Quantize normally: the arithmetic is IEEE float32 without flush-to-zero on both sides (Triton's
    NVIDIA backend only flushes inside libdevice calls, which these kernels do not make). A range
    so small that the scale rounds to 0 in the storage dtype is a degenerate range (above).

Codebook schemes: NF4 and FP8 (the formats bitsandbytes/QLoRA and the fp8 libraries use)
    Both are absmax formats without zeros: ``scale = max|w| / DIVISOR`` in float32, rounded to the
    storage dtype, with the degenerate-range and poisoning rules above; ``v = w / scale`` (float32,
    correctly rounded division), and the code says which value of the codebook stands for v:
    ``w_hat = value(code) * scale``.
    ``nf4``: 4 bits, ``granularity: group`` only (a "block" of bitsandbytes is a group; QLoRA uses
    64). DIVISOR 1. The 16 values are the NormalFloat levels of QLoRA (Dettmers et al. 2023,
    arXiv:2305.14314, appendix E), as bitsandbytes tabulates them (``functional.get_4bit_type
    ("nf4")``, 0.50): NF4_LEVELS below, ascending, so the code is the level's index. The code of v
    is the number of midpoints between neighbouring levels (NF4_MIDPOINTS, float32) that v is
    greater than: nearest level, a tie goes to the lower one, |v| > 1 (possible after the scale is
    rounded down) to the end level. Fields packed as 4-bit fields (above). A degenerate segment
    (scale 1, all zeros) gets code 7, the level 0.0.
    ``nf4_dq``: nf4 with QLoRA's double quantization of the scales: the float32 absmax scales
    (first level, one per group, row-major) have their mean (over finite ones) subtracted and are
    quantized to 8 bits, symmetric, with one float32 second-level scale per DQ_CHUNK consecutive
    scales (``max|s - mean| / 127``). Stored: the 8-bit scale codes (code + 128 in uint8; code 0
    marks a poisoned segment, which decodes to NaN; it is left out of the mean and of its chunk's
    maximum, so the other scales are requantized around it), the second-level scales and the mean. A
    group's scale is ``(code - 128) * chunk_scale + mean`` in float32 (a multiply, then an add:
    never fused), rounded to the weight's dtype, 1 where that is 0; the NF4 codes are computed
    from that decoded scale. QLoRA quantizes the first level with its 8-bit dynamic (float-like)
    map; this format uses linear 8-bit codes around the mean, same bytes (8 bits per group plus 32
    bits per 256 groups).
    ``fp8``: float8 e4m3 (OCP "e4m3fn": 1 sign, 4 exponent, 3 mantissa bits, bias 7, largest
    finite 448, no infinities) codes, ``bits: 8``, granularity ``channel`` or ``tensor``. DIVISOR
    448. v is clamped to [-448, 448] (the stored scale may have been rounded down) and rounded to
    the nearest e4m3 value, ties to even, as ``torch.Tensor.to(torch.float8_e4m3fn)`` does; the
    field is the e4m3 bit pattern (one per byte). A poisoned segment's codes are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BITS = (8, 4, 2)
INTEGER_SCHEMES = ("asymmetric", "symmetric")
SCHEMES = (*INTEGER_SCHEMES, "nf4", "nf4_dq", "fp8")
# scheme -> (the only bit width, the granularities it takes, DIVISOR of the absmax)
CODEBOOK_SCHEMES = {"nf4": (4, ("group",), 1.0), "nf4_dq": (4, ("group",), 1.0), "fp8": (8, ("channel", "tensor"), 448.0)}
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)
# midpoints of neighbouring levels, each computed in float32 from the float32 levels
NF4_MIDPOINTS = tuple(float((torch.tensor(a) + torch.tensor(b)) / 2) for a, b in zip(NF4_LEVELS, NF4_LEVELS[1:]))
NF4_ZERO_CODE = 7
FP8_MAX = 448.0
DQ_CHUNK = 256  # first-level scales per second-level scale (nf4_dq)
GRANULARITIES = ("tensor", "channel", "group")
GROUP_SIZES = (32, 64, 128, 256)
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def spec_exists(bits: int, scheme: str, granularity: str) -> bool:
    """Whether the scheme has codes of this width at this granularity: every bit width and
    granularity for the integer schemes; nf4 and nf4_dq 4 bits per group; fp8 8 bits per channel
    or tensor."""
    if scheme not in CODEBOOK_SCHEMES:
        return True
    only_bits, granularities, _ = CODEBOOK_SCHEMES[scheme]
    return bits == only_bits and granularity in granularities


@dataclass(frozen=True)
class QuantSpec:
    """One point of the format: bit width, scheme, granularity and (for groups) the group size."""

    bits: int
    scheme: str
    granularity: str
    group_size: int | None = None

    def __post_init__(self) -> None:
        # 8.0 == 8 would pass the checks below and then fail deep in a launcher (a shift, a shape)
        if type(self.bits) is not int:
            raise TypeError(f"bits must be an int, one of {BITS}, got {self.bits!r}")
        if self.group_size is not None and type(self.group_size) is not int:
            raise TypeError(f"group_size must be an int (or None), got {self.group_size!r}")
        if self.bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {self.bits!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.scheme in CODEBOOK_SCHEMES:
            bits, granularities, _ = CODEBOOK_SCHEMES[self.scheme]
            if self.bits != bits:
                raise ValueError(f"scheme {self.scheme!r} has {bits}-bit codes, got bits={self.bits}")
            if self.granularity not in granularities:
                raise ValueError(f"scheme {self.scheme!r} takes granularity {' or '.join(map(repr, granularities))}, "
                                 f"got {self.granularity!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "group" and self.group_size not in GROUP_SIZES:
            raise ValueError(f"group_size must be one of {GROUP_SIZES} for granularity 'group', "
                             f"got {self.group_size!r}")
        if self.granularity != "group" and self.group_size is not None:
            raise ValueError(f"group_size is only meaningful with granularity 'group', "
                             f"got group_size={self.group_size} with granularity {self.granularity!r}")

    @property
    def symmetric(self) -> bool:
        """No zeros: the scale alone maps codes to values (symmetric, and the codebook schemes)."""
        return self.scheme != "asymmetric"

    @property
    def codebook(self) -> str:
        """How a field becomes a value: "integer" (field - offset), "nf4" (a level) or "fp8" (e4m3)."""
        return "integer" if self.scheme in INTEGER_SCHEMES else "fp8" if self.scheme == "fp8" else "nf4"

    @property
    def double_quant(self) -> bool:
        return self.scheme == "nf4_dq"

    @property
    def qmin(self) -> int:
        """The smallest integer code (0 for the codebook schemes, whose fields are their codes)."""
        return -(1 << (self.bits - 1)) if self.scheme == "symmetric" else 0

    @property
    def qmax(self) -> float:
        """The largest integer code; for the codebook schemes, the DIVISOR of the absmax."""
        if self.scheme in CODEBOOK_SCHEMES:
            return CODEBOOK_SCHEMES[self.scheme][2]
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    @property
    def offset(self) -> int:
        """What is added to a code to make its stored unsigned field."""
        return -self.qmin

    @property
    def per_byte(self) -> int:
        return 8 // self.bits

    def check_shape(self, n: int, k: int) -> None:
        if n < 1 or k < 1:
            raise ValueError(f"weight must be a non-empty [N, K] matrix, got [{n}, {k}]")
        if self.granularity == "group" and k % self.group_size != 0:
            raise ValueError(f"group_size {self.group_size} must divide K = {k}")

    def packed_cols(self, k: int) -> int:
        return math.ceil(k / self.per_byte)

    def scales_shape(self, n: int, k: int) -> tuple[int, int]:
        if self.granularity == "tensor":
            return (1, 1)
        if self.granularity == "channel":
            return (n, 1)
        return (n, k // self.group_size)

    def nbytes(self, n: int, k: int, scale_dtype: torch.dtype) -> int:
        """Exact persistent bytes of a quantized [N, K] weight: codes + scales + zeros (nf4_dq: codes,
        8-bit scale codes, float32 second-level scales and the float32 mean)."""
        codes = n * self.packed_cols(k)
        rows, cols = self.scales_shape(n, k)
        if self.double_quant:
            return codes + rows * cols + 4 * math.ceil(rows * cols / DQ_CHUNK) + 4
        per_param = rows * cols * torch.finfo(scale_dtype).bits // 8
        return codes + per_param * (1 if self.symmetric else 2)


def scale_zero_pairs(n: int, groups: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zeros), each [N, groups], as views of one new [groups, N, 2] buffer (the scale+zero
    pairs of the Storage section above)."""
    pairs = torch.empty(groups * n * 2, dtype=dtype, device=device)
    # two as_strided views: 2.6 us on a CPU host where indexing and .t() took 4.5 (empty + empty_like: 1.9)
    return pairs.as_strided((n, groups), (2, 2 * n)), pairs.as_strided((n, groups), (2, 2 * n), 1)


def as_scale_zero_pairs(scales: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scales and zeros [N, groups] copied into scale_zero_pairs' layout."""
    pair_scales, pair_zeros = scale_zero_pairs(*scales.shape, scales.dtype, scales.device)
    # detached: scales that require grad (nn.Parameters) would make the new buffer part of a graph,
    # and the second copy_ into a view of it an autograd error
    pair_scales.copy_(scales.detach())
    pair_zeros.copy_(zeros.detach())
    return pair_scales, pair_zeros


def stores_scale_zero_pairs(spec: QuantSpec, dtype: torch.dtype) -> bool:
    """Whether quantize and quantize_ref write a weight of `dtype` in `spec` as scale+zero pairs:
    asymmetric per-group scales of 2 bytes."""
    return spec.granularity == "group" and spec.scheme == "asymmetric" and dtype in (torch.float16, torch.bfloat16)


def empty_scales(spec: QuantSpec, n: int, k: int, dtype: torch.dtype,
                 device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New (scales, zeros) of `dtype` for an [N, K] weight in `spec` (zeros None when symmetric), in
    the layout quantize writes: scale+zero pairs where stores_scale_zero_pairs, else row-major."""
    if stores_scale_zero_pairs(spec, dtype):
        return scale_zero_pairs(n, k // spec.group_size, dtype, device)
    scales = torch.empty(spec.scales_shape(n, k), dtype=dtype, device=device)
    return scales, None if spec.symmetric else torch.empty_like(scales)


def are_scale_zero_pairs(scales: torch.Tensor, zeros: torch.Tensor | None) -> bool:
    """Whether scales and zeros [N, groups] are laid out as scale_zero_pairs lays them out (of
    2-byte elements, the zeros one element after the scales in the same storage)."""
    if zeros is None or scales.element_size() != 2 or zeros.dtype != scales.dtype or scales.dim() != 2:
        return False
    n = scales.shape[0]
    return (scales.stride() == zeros.stride() == (2, 2 * n)
            and scales.untyped_storage().data_ptr() == zeros.untyped_storage().data_ptr()
            and zeros.storage_offset() == scales.storage_offset() + 1)


@dataclass(frozen=True)
class ScaleQuant:
    """The second level of nf4_dq: float32 scales [ceil(groups / DQ_CHUNK)] and mean [1] of the
    8-bit first-level scale codes, and the weight's dtype (the decoded scales' dtype)."""

    chunk_scales: torch.Tensor
    mean: torch.Tensor
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return self.chunk_scales.nbytes + self.mean.nbytes


@dataclass(frozen=True)
class QuantizedTensor:
    """A quantized [N, K] weight: packed codes, scales, zeros (None when symmetric), and for
    nf4_dq the second level (`scales` then holds the uint8 scale codes)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    spec: QuantSpec
    shape: tuple[int, int]
    second: ScaleQuant | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype that was quantized (and dequantizes by default)."""
        return self.scales.dtype if self.second is None else self.second.dtype

    @property
    def nbytes(self) -> int:
        zeros = 0 if self.zeros is None else self.zeros.nbytes
        second = 0 if self.second is None else self.second.nbytes
        return self.codes.nbytes + self.scales.nbytes + zeros + second
