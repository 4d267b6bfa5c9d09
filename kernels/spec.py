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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BITS = (8, 4, 2)
SCHEMES = ("asymmetric", "symmetric")
GRANULARITIES = ("tensor", "channel", "group")
GROUP_SIZES = (32, 64, 128, 256)
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class QuantSpec:
    """One point of the format: bit width, scheme, granularity and (for groups) the group size."""

    bits: int
    scheme: str
    granularity: str
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {self.bits!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
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
        return self.scheme == "symmetric"

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
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
        """Exact persistent bytes of a quantized [N, K] weight: codes + scales + zeros."""
        codes = n * self.packed_cols(k)
        rows, cols = self.scales_shape(n, k)
        per_param = rows * cols * torch.finfo(scale_dtype).bits // 8
        return codes + per_param * (1 if self.symmetric else 2)


@dataclass(frozen=True)
class QuantizedTensor:
    """A quantized [N, K] weight: packed codes, scales, zeros (None when symmetric)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    spec: QuantSpec
    shape: tuple[int, int]

    @property
    def nbytes(self) -> int:
        zeros = 0 if self.zeros is None else self.zeros.nbytes
        return self.codes.nbytes + self.scales.nbytes + zeros
