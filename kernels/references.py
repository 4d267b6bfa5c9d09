"""The PyTorch references of the weight format: quantize_ref and dequantize_ref, with the stored
scale formula (qparams_ref) the kernels share.

They are the contract each kernel in quantization.py and dequantization.py is checked against, and
those modules import them, so each kernel still reads beside its reference. They live here, apart,
because they need only torch: code that needs the format's arithmetic and no kernel (the report,
which draws a run's W_hat again; the op contracts' inputs) never imports Triton.
"""

from __future__ import annotations

import weakref

import torch

from .checks import check_matrix, check_same_device, check_spec
from .codebooks import decode_ref, decode_scales, double_quantize, encode_ref, scales_of
from .packing import pack_fields, unpack_fields
from .spec import (DQ_CHUNK, FLOAT_DTYPES, QuantizedTensor, QuantSpec, as_scale_zero_pairs,
                   stores_scale_zero_pairs)


def qparams_ref(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stored scale and zero (in `dtype`) from float32 segment minima and maxima; see spec.py.

    lo and hi come from torch.amin / amax, which propagate NaN: a NaN or infinite element, or a
    range wider than float32, makes the scale non-finite, and the segment is poisoned (scale and
    zero NaN), as in the kernel.
    """
    span = torch.maximum(-lo, hi) if spec.symmetric else hi - lo
    # Divide by a tensor: PyTorch on CUDA turns division by a Python scalar into a multiplication by
    # its reciprocal, which is not the correctly rounded quotient that the contract (and the kernel) use.
    scale = span / torch.full_like(span, spec.qmax)
    scale = scale.to(dtype)
    finite = torch.isfinite(scale)
    nan = torch.full_like(scale, float("nan"))
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    scale = torch.where(finite, scale, nan)
    return scale, None if spec.symmetric else torch.where(finite, lo.to(dtype), nan)


def describe_segment(spec: QuantSpec, n: int, k: int, row: int, col: int) -> tuple[str, slice, slice]:
    """Words for segment (row, col) of the scales of an [n, k] weight, and its rows and columns in W."""
    if spec.granularity == "tensor":
        return "the whole tensor (per-tensor scale)", slice(0, n), slice(0, k)
    if spec.granularity == "channel":
        return f"row {row}", slice(row, row + 1), slice(0, k)
    g = spec.group_size
    return (f"row {row}, group {col} (columns {col * g}..{(col + 1) * g - 1})",
            slice(row, row + 1), slice(col * g, (col + 1) * g))


def refuse_poisoned_segments(name: str, w: torch.Tensor, q: QuantizedTensor) -> None:
    """Raise a ValueError naming `name` and its first poisoned segment (NaN scale), saying why.

    Reads only the scales (and, on the error path, that one segment of w); one device-to-host sync.
    """
    bad = torch.isnan(scales_of(q))
    if not bool(bad.any()):
        return
    first = bad.nonzero()[0].tolist()
    where, rows, cols = describe_segment(q.spec, *q.shape, *first)
    seg = w[rows, cols].float()
    non_finite = (~torch.isfinite(seg)).nonzero()
    if non_finite.numel():
        r, c = non_finite[0].tolist()
        why = (f"it holds {non_finite.shape[0]} non-finite value(s), first {seg[r, c].item()} at "
               f"[{rows.start + r}, {cols.start + c}]")
    else:
        why = (f"its range [{seg.min().item():.4g}, {seg.max().item():.4g}] is wider than float32 can hold, "
               f"so the scale overflows")
    raise ValueError(f"{name}: {int(bad.sum())} of {bad.numel()} quantization segments cannot be quantized "
                     f"(their scale would be NaN); first: {where}: {why}")


def quantize_ref(w: torch.Tensor, spec: QuantSpec, *, check_finite: bool = False) -> QuantizedTensor:
    """PyTorch reference for `quantize`, same contract and identical codes (NaN scales where the
    kernel's are NaN; ``check_finite`` as there). The per-tensor asymmetric case is the seed
    notebook's quantize_to_int8 / quantize_to_int4 arithmetic."""
    check_matrix("w", w, on_kernel_device=False)
    check_spec(spec)
    n, k = w.shape
    spec.check_shape(n, k)
    x = w.detach().float()  # a weight that requires grad (an nn.Parameter) quantizes as its values
    if spec.granularity == "tensor":
        segs = x.reshape(1, 1, -1)
    elif spec.granularity == "channel":
        segs = x.reshape(n, 1, k)
    else:
        segs = x.reshape(n, k // spec.group_size, spec.group_size)
    lo, hi = segs.amin(dim=-1), segs.amax(dim=-1)
    second = None
    if spec.double_quant:
        stored, second = double_quantize(qparams_ref(lo, hi, spec, torch.float32)[0], w.dtype)
        scale, zero = decode_scales(stored, second), None
    else:
        scale, zero = qparams_ref(lo, hi, spec, w.dtype)
        stored = scale
    s = scale.float().unsqueeze(-1)
    if spec.symmetric:
        v = segs / s
    else:
        v = (segs - zero.float().unsqueeze(-1)) / s
    if spec.codebook == "integer":
        v = torch.where(torch.isnan(v), float(spec.qmin), v)  # a poisoned segment: fields 0
        fields = v.clamp(spec.qmin, spec.qmax).round() - spec.qmin
    else:
        fields = encode_ref(v, spec)
    codes = pack_fields(fields.reshape(n, k), spec.bits)
    if stores_scale_zero_pairs(spec, w.dtype):
        # the layout quantize writes (spec.py, Storage), so that both give the kernels the same
        stored, zero = as_scale_zero_pairs(stored, zero)
    q = QuantizedTensor(codes, stored, zero, spec, (n, k), second)
    if check_finite:
        refuse_poisoned_segments("w", w, q)
    return q


def check_quantized(q: QuantizedTensor, on_kernel_device: bool) -> None:
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q must be a QuantizedTensor (from quantize or quantize_ref), got {type(q).__name__}")
    check_spec(q.spec)
    shape = q.shape
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(type(d) is int and d > 0 for d in shape)):
        raise ValueError(f"q.shape must be the weight's (N, K), two positive Python ints, got {shape!r}")
    n, k = shape
    spec = q.spec
    spec.check_shape(n, k)  # a K that the group size does not divide would leave a group short
    check_matrix("codes", q.codes, (torch.uint8,), on_kernel_device)
    # the kernels take the scales' and zeros' two strides (spec.py, Storage); nf4_dq's codes are row-major
    check_matrix("scales", q.scales, (torch.uint8,) if spec.double_quant else None, on_kernel_device,
                 unit_stride=spec.double_quant)
    if spec.double_quant != (q.second is not None):
        raise ValueError("the second level of the scales (second) must be given exactly when the scheme is nf4_dq")
    if q.codes.shape != (n, spec.packed_cols(k)):
        raise ValueError(f"codes must be [N, ceil(K * bits / 8)] = [{n}, {spec.packed_cols(k)}] for a "
                         f"{spec.bits}-bit [{n}, {k}] weight, got {list(q.codes.shape)}")
    if tuple(q.scales.shape) != spec.scales_shape(n, k):
        raise ValueError(f"scales must be {list(spec.scales_shape(n, k))} for granularity "
                         f"{spec.granularity!r}, got {list(q.scales.shape)}")
    if spec.symmetric != (q.zeros is None):
        raise ValueError("zeros must be given exactly when the scheme is asymmetric")
    if q.zeros is not None and (q.zeros.shape != q.scales.shape or q.zeros.dtype != q.scales.dtype):
        raise ValueError(f"zeros must match scales' shape and dtype, got {list(q.zeros.shape)} "
                         f"{q.zeros.dtype} against {list(q.scales.shape)} {q.scales.dtype}")
    if q.zeros is not None and q.zeros.stride() != q.scales.stride():
        raise ValueError(f"zeros must have the scales' strides, got {tuple(q.zeros.stride())} against "
                         f"{tuple(q.scales.stride())}; pass both .contiguous()")
    if q.second is not None:
        chunks = -(-q.scales.numel() // DQ_CHUNK)
        if tuple(q.second.chunk_scales.shape) != (chunks,) or tuple(q.second.mean.shape) != (1,):
            raise ValueError(f"nf4_dq's second level must be {chunks} chunk scales and 1 mean, got "
                             f"{list(q.second.chunk_scales.shape)} and {list(q.second.mean.shape)}")
        for name, t in (("chunk_scales", q.second.chunk_scales), ("mean", q.second.mean)):
            if t.dtype != torch.float32 or (t.stride(0) != 1 and t.numel() > 1):  # read as contiguous float32
                raise ValueError(f"nf4_dq's {name} must be contiguous float32, got {t.dtype} with stride "
                                 f"{t.stride(0)}")
        if q.second.dtype not in FLOAT_DTYPES.values():
            raise ValueError(f"nf4_dq's second level's dtype (the weight's) must be one of "
                             f"{', '.join(str(d).removeprefix('torch.') for d in FLOAT_DTYPES.values())}, got "
                             f"{q.second.dtype}")
        check_same_device(codes=q.codes, chunk_scales=q.second.chunk_scales, mean=q.second.mean)
    check_same_device(codes=q.codes, scales=q.scales, zeros=q.zeros)


_checked_weights: dict[int, weakref.ref] = {}


def check_weight_once(q: QuantizedTensor) -> None:
    """check_quantized(q, on_kernel_device=True) on the first call with this QuantizedTensor only:
    it is frozen, so what was checked (shapes, dtypes, layout, device) holds for its life, but for
    a tensor of it replaced in place (Tensor.set_, resize_), which prepared notices and has checked
    again (forget_checked); a launcher called every layer of every token should not pay for the
    checks again."""
    seen = _checked_weights.get(id(q))
    if seen is not None and seen() is q:
        return
    check_quantized(q, on_kernel_device=True)
    if len(_checked_weights) >= 4096:  # ids of weights since freed; a weak reference each
        _checked_weights.clear()
    _checked_weights[id(q)] = weakref.ref(q)


def forget_checked(q: QuantizedTensor) -> None:
    """Have check_weight_once check q again on its next call (a tensor of q replaced in place)."""
    _checked_weights.pop(id(q), None)


def out_dtype_of(q: QuantizedTensor, out_dtype: torch.dtype | None) -> torch.dtype:
    dtype = q.dtype if out_dtype is None else out_dtype
    if dtype not in FLOAT_DTYPES.values():
        raise TypeError(f"out_dtype must be float32, float16 or bfloat16, got {dtype}")
    return dtype


def expand_params(p: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """Per-segment scales or zeros [rows, segments] -> one float32 value per element [N, K]."""
    n, k = q.shape
    if q.spec.granularity == "group":
        p = p.repeat_interleave(q.spec.group_size, dim=1)
    return p.float().expand(n, k)


def dequantize_ref(q: QuantizedTensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """PyTorch reference for `dequantize`, same contract. The per-tensor asymmetric case is the
    seed notebook's dequantize_from_int8 / dequantize_from_int4 arithmetic (plus the saturation)."""
    check_quantized(q, on_kernel_device=False)
    n, k = q.shape
    fields = unpack_fields(q.codes, q.spec.bits, k)
    values = (fields - q.spec.offset).float() if q.spec.codebook == "integer" else decode_ref(fields, q.spec)
    w = values * expand_params(scales_of(q), q)
    if q.zeros is not None:
        w = w + expand_params(q.zeros, q)
    dtype = out_dtype_of(q, out_dtype)
    fmax = torch.finfo(dtype).max
    return w.clamp(-fmax, fmax).to(dtype)  # clamp keeps NaN


def largest_dequantized(q: QuantizedTensor) -> float:
    """The largest magnitude dequantize_ref can compute in float32 (before its saturation) for any
    code of q's format under q's scales and zeros: values * scale + zero is linear in the value, so
    its extremes lie at the format's smallest and largest values. NaN segments (a poisoned scale)
    are left out: they dequantize to NaN in every dtype. The matmuls use it to see, once per
    weight, whether a weight's values can pass a half-precision dtype's range (qmatmul_route)."""
    fields = torch.arange(2 ** q.spec.bits, device=q.codes.device)
    values = (fields - q.spec.offset).float() if q.spec.codebook == "integer" else decode_ref(fields, q.spec)
    values = values[~values.isnan()]  # e4m3's NaN codes
    scales = scales_of(q).float()
    ends = torch.stack([values.min() * scales, values.max() * scales])  # the same float32 products as dequantize_ref's
    if q.zeros is not None:
        ends = ends + q.zeros.float()
    ends = ends.abs()
    return ends.masked_fill(ends.isnan(), 0.0).max().item()  # inf stays inf
