"""What the launchers (qmatmul's and dequantize's) need of a weight, made once per QuantizedTensor.

A launcher called for every layer of every token should pay on the host only for what changes
between two calls (x, y and M). What depends on the weight alone is made on the first call with a
QuantizedTensor and kept while it lives (it is frozen): its checks (check_weight_once), the int32
view of its codes, its format's kernel constants (format_constants, which every kernel that reads
the format takes), and the part of the launch key (see launching.Launcher) that its tensors and
sizes make, so that a call does not walk the kernel's 12-16 arguments again.

nf4_dq's 8-bit scales are decoded inside the kernels (dequantization.segment_scales), from the
weight's own tensors: nothing decoded is kept, so the weight stays the size of its format. The one
copy kept is the GEMV's group scales and zeros, laid out group-major for it (GemvParams), made on
the GEMV's first call with the weight.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from .codebooks import CODE_IDS, SCALE_DTYPE_IDS, code_table
from .launching import key_token, signature
from .references import check_weight_once
from .spec import QuantizedTensor


def code_units(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Sub-byte codes as int32 words where each row is a whole number of 4-byte aligned words
    (fewer, wider loads), else as they are (uint8). 8-bit codes stay bytes: on an H100 the GEMV
    ran 74 us over words at N = K = 8192, where an earlier
    form of it over bytes ran 44 us."""
    if bits < 8 and codes.shape[1] % 4 == 0 and codes.stride(0) % 4 == 0 and codes.data_ptr() % 4 == 0:
        return codes.view(torch.int32)
    return codes


@dataclass(frozen=True)
class GemvParams:
    """What the GEMV (quantized_matmul.qgemv_kernel) reads a weight's scales and zeros from.

    scales, zeros: its arguments for them; stride_row, stride_group: the stride between two rows'
    and two groups' entries; paired: each scale and its zero share one 32-bit word (the scale in
    the low half), read through `scales`; extra_bytes: what a copy made for the GEMV holds on the
    device (0 where q's own tensors are read); key: the weight's share of the GEMV's launch key
    (the signature of its tensors and sizes and the format's constants, as a launching.key_token)."""

    scales: torch.Tensor
    zeros: torch.Tensor
    stride_row: int
    stride_group: int
    paired: bool
    extra_bytes: int
    key: int

    def describe(self) -> str:
        """The layout in a few words, with the bytes of the copy; "" where q's own are read."""
        if not self.extra_bytes:
            return ""
        what = ("scale+zero words" if self.paired else "scales" if self.zeros is self.scales
                else "scales and zeros")
        return f"{what} group-major (+{self.extra_bytes} bytes)"


@dataclass(frozen=True)
class PreparedWeight:
    """A weight's share of the matmul kernels' arguments.

    units: the codes as the GEMV reads them (code_units); scales, zeros: what the kernels take
    for them (zeros = scales when there are none; nf4_dq's scales are its uint8 scale codes);
    second, mean: nf4_dq's chunk scales and mean (stand-ins otherwise); stride_sn: the scales'
    row stride; fmt: the format constants both kernels take; params_paired: whether the GEMMs may
    read the 2-byte scales and zeros two to a 32-bit word (qgemm.paired_params: both 4-byte
    aligned, an even row stride); gemm_key: the weight's share of the GEMMs' launch key (the
    signature of its tensors and sizes, fmt and params_paired; as a launching.key_token);
    gemv_params(): the GEMV's scales and zeros (GemvParams, made on first use); gemv_constants:
    per activation dtype, the GEMV's constants (fmt, FIELDS, FOLD_OFFSET, PAIRED), which the key's
    fmt, units dtype, pairing and x dtype determine; dequantize_plans: per output dtype, dequantize's launch
    (dequantization.DequantizePlan; the dequantize launcher's key is gemm_key and the dtype)."""

    ref: weakref.ref
    units: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    table: torch.Tensor
    second: torch.Tensor
    mean: torch.Tensor
    stride_sn: int
    fmt: dict[str, Any]
    params_paired: bool
    gemm_key: int
    gemv_constants: dict[torch.dtype, dict[str, Any]] = field(default_factory=dict)
    dequantize_plans: dict[torch.dtype, Any] = field(default_factory=dict)
    gemv_layout: list[GemvParams] = field(default_factory=list)  # gemv_params(), once made

    def gemv_params(self) -> GemvParams:
        if not self.gemv_layout:
            self.gemv_layout.append(gemv_params(self.ref(), self))
        return self.gemv_layout[0]

    def gemv_constants_for(self, dtype: torch.dtype) -> dict[str, Any]:
        constants = self.gemv_constants.get(dtype)
        if constants is None:
            spec = self.ref().spec
            # asymmetric integer codes with half-precision activations: the offset folded per unit
            # (one instruction less an element; the float32 sums keep ~19 bits, far past the output's 8 or 11)
            fold = not spec.symmetric and spec.codebook == "integer" and dtype != torch.float32
            constants = dict(self.fmt, FIELDS=self.units.element_size() * spec.per_byte, FOLD_OFFSET=fold,
                             PAIRED=self.gemv_params().paired)
            self.gemv_constants[dtype] = constants
        return constants


GRANULARITY_IDS = {"tensor": 0, "channel": 1, "group": 2}


def second_level(q: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' nf4_dq arguments: (the float32 chunk scales, the float32 mean [1]); for any
    other scheme two stand-in pointers (never read: DQ is False)."""
    if q.second is None:
        return q.scales, q.scales
    return q.second.chunk_scales, q.second.mean


def format_constants(q: QuantizedTensor) -> dict[str, Any]:
    """The constexpr arguments that tell dequant_tile, and the kernels built on it (dequantize, the
    GEMV, the GEMMs), q's format: GROUP is 1 where there are no groups; DQ and SCALE_DTYPE say
    whether and into which dtype nf4_dq's 8-bit scales are decoded (segment_scales)."""
    spec = q.spec
    return dict(BITS=spec.bits, OFFSET=spec.offset, CODE=CODE_IDS[spec.codebook], SYMMETRIC=spec.symmetric,
                GRANULARITY=GRANULARITY_IDS[spec.granularity], GROUP=spec.group_size or 1, DQ=q.second is not None,
                SCALE_DTYPE=SCALE_DTYPE_IDS[q.dtype])


def group_major(t: torch.Tensor) -> torch.Tensor:
    """[N, groups] -> a contiguous [groups, N] copy."""
    return t.t().contiguous()


def gemv_params(q: QuantizedTensor, p: PreparedWeight) -> GemvParams:
    """Per-group scales (not nf4_dq's 8-bit codes) copied group-major, [groups, N]: a GEMV tile
    needs one group's scales for BLOCK_N rows at a time, contiguous there, where in q's [N, groups]
    they are BLOCK_N 2-byte loads from as many 32-byte sectors. With zeros of 2 bytes, each scale
    and its zero in one 32-bit word, one load for both. On an H200, int4 g128 (kernels/NOTES.md,
    session 19): 24.3 -> 21.8 us at 8192^2 float16, 59.7 -> 52.1 at 28672 x 8192 bfloat16. The
    copy costs the device as many bytes as q's scales and zeros (+5.9% of an int4 g128 weight)
    while q lives, like tinygemm's scales_and_zeros made for its kernel. Any other format: q's own."""
    n, k = q.shape
    scales, zeros, stride_row, stride_group, paired, extra = p.scales, p.zeros, p.stride_sn, 1, False, 0
    if q.spec.granularity == "group" and q.second is None:
        stride_row, stride_group = 1, n
        if q.zeros is not None and q.scales.element_size() == 2:
            pairs = torch.stack([q.scales.t(), q.zeros.t()], dim=-1).contiguous()  # [groups, N, 2]
            scales = zeros = pairs.view(torch.int32).view(pairs.shape[:2])
            paired, extra = True, pairs.nbytes
        else:
            scales = group_major(q.scales)
            zeros = scales if q.zeros is None else group_major(q.zeros)
            extra = scales.nbytes + (0 if q.zeros is None else zeros.nbytes)
    args = (p.units, scales, zeros, p.table, p.second, p.mean, n, k, p.units.stride(0), stride_row, stride_group,
            p.units.shape[1])
    # with the format's constants: two weights alike in their tensors can differ in their format
    key = key_token((signature(args), tuple(p.fmt.values()), paired))
    return GemvParams(scales, zeros, stride_row, stride_group, paired, extra, key)


_prepared: dict[int, PreparedWeight] = {}


def prepared(q: QuantizedTensor) -> PreparedWeight:
    """q's PreparedWeight, made (and q checked) on its first use."""
    p = _prepared.get(id(q))
    if p is not None and p.ref() is q:
        return p
    check_weight_once(q)
    spec = q.spec
    n, k = q.shape
    units = code_units(q.codes, spec.bits)
    table = code_table(spec, q.codes.device)
    scales = q.scales
    zeros = q.zeros if q.zeros is not None else scales
    second, mean = second_level(q)
    stride_sn = scales.stride(0)
    fmt = format_constants(q)
    weight_args = (scales, zeros, table, second, mean)
    paired = (scales.element_size() == 2 and zeros.element_size() == 2 and stride_sn % 2 == 0
              and scales.data_ptr() % 4 == 0 and zeros.data_ptr() % 4 == 0)
    # with the format's constants: two weights alike in their tensors can differ in their format
    gemm_key = key_token((signature((q.codes,) + weight_args + (n, k, q.codes.stride(0), stride_sn)),
                          tuple(fmt.values()), paired))
    p = PreparedWeight(weakref.ref(q), units, scales, zeros, table, second, mean, stride_sn, fmt, paired, gemm_key)
    _prepared[id(q)] = p
    # dropped with q: the entry holds views of q's tensors, which must not outlive it
    weakref.finalize(q, _prepared.pop, id(q), None)
    return p
