"""What the launchers (qmatmul's and dequantize's) need of a weight, made once per QuantizedTensor.

A launcher called for every layer of every token should pay on the host only for what changes
between two calls (x, y and M). What depends on the weight alone is made on the first call with a
QuantizedTensor and kept while it lives (it is frozen): its checks (check_weight_once), the int32
view of its codes, its format's kernel constants (format_constants, which every kernel that reads
the format takes), the part of the launch key (see launching.Launcher) that its tensors and
sizes make, so that a call does not walk the kernel's 12-16 arguments again, and its tensors'
addresses, which a direct launch takes as ints.

nf4_dq's 8-bit scales are decoded inside the kernels (dequantization.segment_scales), from the
weight's own tensors: nothing decoded is kept, so the weight stays the size of its format. The one
copy that may be kept is of per-group scales and zeros, laid out group-major for the GEMV and the
GEMMs (group_major_copy, ScaleArgs), made on the first matmul call with the weight where its
scales are not laid out so already (quantize writes asymmetric 2-byte ones so: no copy).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .codebooks import CODE_IDS, SCALE_DTYPE_IDS, code_table
from .launching import key_token, signature
from .references import check_weight_once, forget_checked, largest_dequantized
from .spec import QuantizedTensor, are_scale_zero_pairs, as_scale_zero_pairs


def code_units(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Sub-byte codes as int32 words where each row is a whole number of 4-byte aligned words
    (fewer, wider loads), else as they are (uint8). 8-bit codes stay bytes: on an H100 the GEMV
    ran 74 us over words at N = K = 8192, where an earlier
    form of it over bytes ran 44 us."""
    if bits < 8 and codes.shape[1] % 4 == 0 and codes.stride(0) % 4 == 0 and codes.data_ptr() % 4 == 0:
        return codes.view(torch.int32)
    return codes


@dataclass(frozen=True)
class GroupMajor:
    """A weight's per-group scales and zeros copied group-major ([groups, N]) for the matmul
    kernels (group_major_copy). scales, zeros: the copies (the same tensor where there are no zeros,
    or where words); words: each scale and its zero share one int32 word (the scale in the low
    half), `scales` holding the words; extra_bytes: what the copy holds on the device."""

    scales: torch.Tensor
    zeros: torch.Tensor
    words: bool
    extra_bytes: int


@dataclass(frozen=True)
class ScaleArgs:
    """What a matmul kernel (the GEMV, the GEMMs) reads a weight's scales and zeros from.

    scales, zeros: its arguments for them; stride_row, stride_group: the stride between two rows'
    and two groups' entries; words: a scale and its zero share one 32-bit word (GroupMajor.words),
    read through `scales`; extra_bytes: what a copy made for the kernels holds on the device (0
    where q's own tensors are read); key: the weight's share of the kernel's launch key (the
    signature of its tensors and sizes and the format's constants, as a launching.key_token);
    pointers: the addresses of the weight's six tensor arguments in the kernel's order (codes,
    scales, zeros, table, second, mean), which a direct launch takes as ints (launching.Launcher:
    each tensor would cost the launch a data_ptr() call and a driver query)."""

    scales: torch.Tensor
    zeros: torch.Tensor
    stride_row: int
    stride_group: int
    words: bool
    extra_bytes: int
    key: int
    pointers: tuple[int, ...]

    def describe(self) -> str:
        """The layout in a few words, with the bytes of the copy; "" where q's own are read."""
        if not self.extra_bytes:
            return ""
        what = ("scale+zero words" if self.words else "scales" if self.zeros is self.scales
                else "scales and zeros")
        return f"{what} group-major (+{self.extra_bytes} bytes)"


@dataclass(frozen=True)
class PreparedWeight:
    """A weight's share of the matmul kernels' arguments.

    units: the codes as the GEMV reads them (code_units); scales, zeros: what the kernels take
    for them (zeros = scales when there are none; nf4_dq's scales are its uint8 scale codes);
    second, mean: nf4_dq's chunk scales and mean (stand-ins otherwise); stride_sn, stride_sg: the
    scales' (and zeros') row and group strides; fmt: the format constants the kernels take;
    own_key: the signature of q's own tensors and sizes and fmt (a launching.key_token): the
    weight's share of dequantize's launch key, and of the GEMMs' where they read q's own scales;
    pointers: the addresses of q's codes, scales, zeros, table, second and mean in the kernels'
    order (ScaleArgs.pointers); gemv_scales() / gemm_scales(): what the GEMV and the GEMMs read the
    scales from (ScaleArgs, made on first use); gemv_constants_for(dtype): per activation dtype,
    the GEMV's constants (fmt, FIELDS, FOLD_OFFSET, SCALE_ZERO_WORDS), which its key's fmt, units
    dtype, words and x dtype determine; gemm_constants_for(ieee): the GEMMs' constants, which
    their key determines; dequantize_plans: per output dtype,
    dequantize's launch (dequantization.DequantizePlan; its launcher's key is own_key and the dtype)."""

    ref: weakref.ref
    units: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    table: torch.Tensor
    second: torch.Tensor
    mean: torch.Tensor
    stride_sn: int
    stride_sg: int
    fmt: dict[str, Any]
    own_key: int
    pointers: tuple[int, ...]
    layout: tuple  # storage_layout(q) when this was made
    dequantize_plans: dict[torch.dtype, Any] = field(default_factory=dict)
    # made on first use (_once): "copy" (group_major_copy's, or None), "gemv" and "gemm" (ScaleArgs),
    # the GEMV's constants per activation dtype, the GEMMs' per IEEE; "scale versions": those of
    # the scales the copy or fits' answers were made from (prepared)
    made: dict[Any, Any] = field(default_factory=dict)
    fit: dict[torch.dtype, bool] = field(default_factory=dict)  # fits' answers, per dtype

    def _once(self, name: Any, make: Callable[[PreparedWeight], Any]) -> Any:
        try:  # one lookup on the calls after the first: the launchers ask on every call
            return self.made[name]
        except KeyError:
            made = self.made[name] = make(self)
            return made

    def group_major(self) -> GroupMajor | None:
        def make(p: PreparedWeight) -> GroupMajor | None:
            q = p.ref()
            copy = group_major_copy(q)
            if copy is not None and copy.extra_bytes:
                # a copy of q's values: made again when they are written in place (prepared)
                p.made["scale versions"] = scale_versions(p)
            return copy
        return self._once("copy", make)

    def gemv_scales(self) -> ScaleArgs:
        return self._once("gemv", gemv_scales)

    def gemm_scales(self) -> ScaleArgs:
        return self._once("gemm", gemm_scales)

    def gemv_sizes(self) -> tuple[int, ...]:
        """The GEMV's integer arguments (N, K, the units' row stride, the scales' row and group
        strides, the units a row), made once: read from the tensors, they cost a call ~0.4 us."""
        def make(p: PreparedWeight) -> tuple[int, ...]:
            scales = p.gemv_scales()
            n, k = p.ref().shape
            return n, k, p.units.stride(0), scales.stride_row, scales.stride_group, p.units.shape[1]
        return self._once("gemv sizes", make)

    def gemm_sizes(self) -> tuple[int, ...]:
        """The GEMMs' integer arguments that depend on the weight alone (N, K, the codes' row
        stride, the scales' row and group strides), made once, as gemv_sizes."""
        def make(p: PreparedWeight) -> tuple[int, ...]:
            q = p.ref()
            scales = p.gemm_scales()
            return (*q.shape, q.codes.stride(0), scales.stride_row, scales.stride_group)
        return self._once("gemm sizes", make)

    def gemm_constants_for(self, ieee: bool) -> dict[str, Any]:
        """The GEMMs' constants (fmt, IEEE and how they read the scales), made once per IEEE: a call
        whose launch is planned does not read them (launching.Launcher), so it should not build them."""
        def make(p: PreparedWeight) -> dict[str, Any]:
            words = p.gemm_scales().words
            return dict(p.fmt, IEEE=ieee, SCALE_ZERO_WORDS=words)
        return self._once(("gemm constants", ieee), make)

    def fits(self, dtype: torch.dtype) -> bool:
        """Whether every value the weight's codes can dequantize to lies within dtype's finite
        range (references.largest_dequantized), found once per dtype, with 1/64 to spare for the
        kernels' own roundings (an FMA where the reference rounds twice, nf4_dq's scales decoded
        into a half-precision dtype). Where one may not, the reference saturates it to dtype's
        largest value and so does dequantize (which clamps only then); the fused kernels, which
        multiply in float32 or convert a tile for tl.dot, would not (qmatmul_route)."""
        fit = self.fit.get(dtype)  # one lookup on the calls after the first (qmatmul asks on every call)
        if fit is None:
            self.made["scale versions"] = scale_versions(self)  # found again when they are written in place (prepared)
            fit = self.fit[dtype] = largest_dequantized(self.ref()) <= torch.finfo(dtype).max * (1 - 2.0**-6)
        return fit

    def gemv_constants_for(self, dtype: torch.dtype) -> dict[str, Any]:
        """The GEMV's constants for activations of `dtype`, made once per dtype."""
        def make(p: PreparedWeight) -> dict[str, Any]:
            spec = p.ref().spec
            # asymmetric integer codes with half-precision activations: the offset folded per unit
            # (one instruction less an element; the float32 sums keep ~19 bits, far past the output's 8 or 11)
            fold = not spec.symmetric and spec.codebook == "integer" and dtype != torch.float32
            return dict(p.fmt, FIELDS=p.units.element_size() * spec.per_byte, FOLD_OFFSET=fold,
                        SCALE_ZERO_WORDS=p.gemv_scales().words)
        return self._once(("gemv constants", dtype), make)


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


def group_major_copy(q: QuantizedTensor) -> GroupMajor | None:
    """q's per-group scales (not nf4_dq's 8-bit codes) and zeros copied group-major, [groups, N];
    None for any other format. A GEMV tile needs one group's scales for BLOCK_N rows at a time,
    contiguous there, where in q's [N, groups] they are BLOCK_N 2-byte loads from as many 32-byte
    sectors. Where scales and zeros are 2 bytes, each scale and its zero in one 32-bit word: one
    load for both; where q holds them so already (quantize's scale+zero pairs, spec.py), those
    words are read and nothing is copied, and so are scales (and zeros) already group-major
    (strides (1, N)) where there are no 2-byte zeros to pair. On an H200, int4 g128 (kernels/NOTES.md, sessions 19-20):
    the GEMV 24.3 -> 21.8 us at 8192^2 float16, 59.7 -> 52.1 at 28672 x 8192 bfloat16; the split-K
    GEMM (words) 26.0 -> 22.5 at M = 16, 46.7 -> 40.8 at M = 64. A copy costs the device as many
    bytes as q's scales and zeros (+5.9% of an int4 g128 weight) while q lives, like tinygemm's
    scales_and_zeros made for its kernel."""
    if q.spec.granularity != "group" or q.second is not None:
        return None
    if q.zeros is not None and q.scales.element_size() == 2 and q.zeros.element_size() == 2:
        scales, extra = q.scales, 0
        # quantize's own layout (4-byte aligned, as its buffers are) is read in place; any other is copied into it
        if not (are_scale_zero_pairs(q.scales, q.zeros) and q.scales.data_ptr() % 4 == 0):
            scales = as_scale_zero_pairs(q.scales, q.zeros)[0]
            extra = 2 * scales.numel() * scales.element_size()
        n, groups = scales.shape
        words = torch.as_strided(scales, (groups, n, 2), (2 * n, 2, 1)).view(torch.int32).view(groups, n)
        return GroupMajor(words, words, True, extra)
    if q.scales.stride() == (1, q.scales.shape[0]):
        # already group-major (zeros, if any, with the same strides: check_quantized): read in place
        scales = q.scales.t()
        return GroupMajor(scales, scales if q.zeros is None else q.zeros.t(), False, 0)
    scales = q.scales.t().contiguous()  # [groups, N]
    zeros = scales if q.zeros is None else q.zeros.t().contiguous()
    return GroupMajor(scales, zeros, False, scales.nbytes + (0 if q.zeros is None else zeros.nbytes))


def addresses(tensors: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    """The tensors' data_ptr(): valid while the PreparedWeight that holds them (or views of them) lives."""
    return tuple(t.data_ptr() for t in tensors)


def scale_args(p: PreparedWeight, codes: torch.Tensor, tail: tuple, scales: torch.Tensor, zeros: torch.Tensor,
               stride_row: int, stride_group: int, words: bool = False, extra_bytes: int = 0) -> ScaleArgs:
    """ScaleArgs for a kernel that reads `codes` and these scales and zeros, keyed on the signature
    of the weight's arguments in the kernel's order (codes, scales, zeros, table, second, mean, N,
    K, the codes' row stride, the scales' strides, then `tail`), with the format's constants: two
    weights alike in their tensors can differ in their format."""
    n, k = p.ref().shape
    tensors = (codes, scales, zeros, p.table, p.second, p.mean)
    args = tensors + (n, k, codes.stride(0), stride_row, stride_group) + tail
    key = key_token((signature(args), tuple(p.fmt.values()), words))
    return ScaleArgs(scales, zeros, stride_row, stride_group, words, extra_bytes, key, addresses(tensors))


def gemv_scales(p: PreparedWeight) -> ScaleArgs:
    """The GEMV's: the group-major copy wherever there is one (a group stride of N), else q's own.
    The GEMV reads the codes as units (code_units), so many units a row (its last argument)."""
    tail = (p.units.shape[1],)
    gm = p.group_major()
    if gm is None:
        return scale_args(p, p.units, tail, p.scales, p.zeros, p.stride_sn, p.stride_sg)
    return scale_args(p, p.units, tail, gm.scales, gm.zeros, 1, p.ref().shape[0], gm.words, gm.extra_bytes)


def gemm_scales(p: PreparedWeight) -> ScaleArgs:
    """The GEMMs': for 4- and 2-bit codes the group-major copy the GEMV reads too (the scale+zero
    words, or group-major scales and zeros), else q's own (the 8-bit route dequantizes tiles as
    dequantize does). On an H200 (kernels/NOTES.md, session 21), against q's row-major scales
    read two groups to a word: symmetric int4 g128 took the split-K GEMM at M = 16 from 23.9 to
    22.6 us at 8192^2 (61.8 to 58.7 at 28672 x 8192; at M = 64 from 0.6% faster to 2.6% slower),
    NF4 g64 at M = 64 from 61.5 to 54.2 (190.8 to 169.6)."""
    q = p.ref()
    gm = p.group_major() if q.spec.bits < 8 else None
    if gm is None:
        return ScaleArgs(p.scales, p.zeros, p.stride_sn, p.stride_sg, False, 0, p.own_key, p.pointers)
    return scale_args(p, q.codes, (), gm.scales, gm.zeros, 1, q.shape[0], gm.words, gm.extra_bytes)


_prepared: dict[int, PreparedWeight] = {}


def scale_versions(p: PreparedWeight) -> tuple[int, int, int, int, int] | None:
    """The version counters of the weight's scales, zeros, nf4_dq's second level (p's are q's
    own; stand-ins, the scales, where there are none) and codes (p.units, a view of them), which
    PyTorch bumps on every in-place write (a state dict loaded into them, a copy_, a set_); None
    for tensors made under torch.inference_mode, which keep none."""
    try:
        return p.scales._version, p.zeros._version, p.second._version, p.mean._version, p.units._version
    except RuntimeError:
        return None


def storage_layout(q: QuantizedTensor) -> tuple:
    """The address, shape and strides of each of q's tensors: what a PreparedWeight (its views,
    its pointers, the checks made once) was built on. Tensor.set_ and resize_ change them in place,
    which the frozen QuantizedTensor cannot prevent."""
    tensors = (q.codes, q.scales, q.zeros) + (() if q.second is None else (q.second.chunk_scales, q.second.mean))
    return tuple(None if t is None else (t.data_ptr(), tuple(t.shape), t.stride()) for t in tensors)


def prepared(q: QuantizedTensor) -> PreparedWeight:
    """q's PreparedWeight, made (and q checked) on its first use. Where something was made from the
    values of q's scales (a copy the kernels read, group_major_copy; whether its values fit a dtype,
    fits) and they have been written in place since, what was made from them is dropped and made
    again on use (the codes and q's own scales are read where they are). Where one of q's tensors
    was replaced in place since (Tensor.set_, resize_: another storage, shape or strides), q is
    checked again and prepared anew. Both are seen through version counters, read once something
    was made from the scales (every qmatmul and dequantize makes fits' answer)."""
    p = _prepared.get(id(q))
    if p is not None and p.ref() is q:
        seen = p.made.get("scale versions")
        # (not through scale_versions: a call pays for this; tensors that keep no versions never set seen)
        if seen is not None and seen != (p.scales._version, p.zeros._version, p.second._version, p.mean._version,
                                         p.units._version):
            if storage_layout(q) == p.layout:  # values written in place: what was made from them is dropped
                p.made.clear()
                p.fit.clear()
                p.dequantize_plans.clear()  # whether they clamp follows from the scales (fits)
                return p
            # a tensor replaced through set_ / resize_: check q again and prepare it anew
            forget_checked(q)
        else:
            return p
    check_weight_once(q)
    spec = q.spec
    n, k = q.shape
    units = code_units(q.codes, spec.bits)
    table = code_table(spec, q.codes.device)
    scales = q.scales
    zeros = q.zeros if q.zeros is not None else scales
    second, mean = second_level(q)
    stride_sn, stride_sg = scales.stride()
    fmt = format_constants(q)
    weight_args = (q.codes, scales, zeros, table, second, mean)
    # with the format's constants: two weights alike in their tensors can differ in their format
    own_key = key_token((signature(weight_args + (n, k, q.codes.stride(0), stride_sn, stride_sg)), tuple(fmt.values())))
    p = PreparedWeight(weakref.ref(q), units, scales, zeros, table, second, mean, stride_sn, stride_sg, fmt, own_key,
                       addresses(weight_args), storage_layout(q))
    _prepared[id(q)] = p
    # dropped with q: the entry holds views of q's tensors, which must not outlive it
    weakref.finalize(q, _prepared.pop, id(q), None)
    return p
