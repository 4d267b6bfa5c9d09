"""The codebook schemes' arithmetic in PyTorch (spec.py, "Codebook schemes"): NF4 and FP8 codes
from scaled values and back, and the double quantization of NF4's scales (nf4_dq).

`double_quantize` and `decode_scales` are nf4_dq's second level made and decoded by PyTorch ops:
the references use them. The kernels do both with the same operations in the same order:
quantize makes the 8-bit scales in one kernel after `finite_mean` (scale_codes.py), and its codes
pass, dequantize and the matmul kernels decode them group by group (dequantization.segment_scales),
so that no decoded tensor is made or kept per call; tests/test_codebook_formats.py checks each
pair bit for bit.
"""

from __future__ import annotations

import math

import torch

from .spec import DQ_CHUNK, FP8_MAX, NF4_LEVELS, NF4_MIDPOINTS, QuantizedTensor, QuantSpec, ScaleQuant


CODE_IDS = {"integer": 0, "nf4": 1, "fp8": 2}  # a kernel's CODE: quantize_tile's and dequantization.field_values'
# a kernel's SCALE_DTYPE: the dtype nf4_dq's scales decode into (dequantization.segment_scales)
SCALE_DTYPE_IDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def table(values: tuple[float, ...], device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


NF4_CELLS = 32  # of NF4's encode table: cells of width 2 / NF4_CELLS over [-1, 1]
MAGIC = 12582912.0  # 1.5 * 2^23: the bits of MAGIC + n (|n| < 2^22) are 0x4B400000 + n


def nf4_cells() -> tuple[float, ...]:
    """NF4's encode table (quantize_codes.quantize_tile), 2 * NF4_CELLS float32 values: for each cell
    c, [c / 16 - 1, (c + 1) / 16 - 1), the midpoint that lies in it (+inf where none does), then
    for each cell the number of midpoints below its start, plus MAGIC (1.5 * 2^23: the float's
    low bits are the number; exact_math.rounded_int). The code of v in cell c is that number, plus
    1 if v is above the cell's midpoint: the count of midpoints below v, as encode_ref counts them,
    with one compare. Each cell holds at most one midpoint, and none lies within 1/1000 of a
    cell's edge, so a v put in the neighbouring cell by the rounding of v * 16 + 15.5 to a cell
    (an edge lands on a tie, which may go either way; the float rounding moves it by at most 2^-19
    there, 2^-23 in v) still gets its own count; both are checked here, when the table is made."""
    width = 2.0 / NF4_CELLS
    thresholds, below = [], []
    for c in range(NF4_CELLS):
        start = c * width - 1.0
        inside = [m for m in NF4_MIDPOINTS if start <= m < start + width]
        assert len(inside) <= 1 and all(min(m - start, start + width - m) > 1e-3 for m in inside)
        thresholds.append(inside[0] if inside else math.inf)
        below.append(MAGIC + sum(m < start for m in NF4_MIDPOINTS))
    return tuple(thresholds + below)


_tables: dict[tuple[torch.device, str], torch.Tensor] = {}
TABLES = {"nf4 levels": NF4_LEVELS, "nf4 cells": nf4_cells(), "none": (0.0,)}


def code_table(spec: QuantSpec, device: torch.device, decode: bool = True) -> torch.Tensor:
    """The float32 table a kernel reads for spec's codes, made once per device (a tensor's
    .device: the launchers call this on every call, so the key is built from it as it is): the NF4
    levels (decode) or its encode table (nf4_cells); for the other schemes, which read none, a
    1-element stand-in."""
    name = ("nf4 levels" if decode else "nf4 cells") if spec.codebook == "nf4" else "none"
    key = (device, name)
    if key not in _tables:
        _tables[key] = table(TABLES[name], device)
    return _tables[key]


def encode_ref(v: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Fields (int32) of float32 values v = w / scale; NaN (a poisoned segment) gives field 0."""
    if spec.codebook == "nf4":
        # the number of midpoints v is above; a NaN is above none
        return (v.unsqueeze(-1) > table(NF4_MIDPOINTS, v.device)).sum(dim=-1, dtype=torch.int32)
    v = torch.where(torch.isnan(v), torch.zeros_like(v), v).clamp(-FP8_MAX, FP8_MAX)
    return v.to(torch.float8_e4m3fn).view(torch.uint8).to(torch.int32)


def decode_ref(fields: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """float32 values of int fields: the NF4 level, or the e4m3 value."""
    if spec.codebook == "nf4":
        return table(NF4_LEVELS, fields.device)[fields.long()]
    return fields.to(torch.uint8).view(torch.float8_e4m3fn).float()


def finite_mean(flat: torch.Tensor, finite: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [1]: the mean of the finite values of flat (0 where none is): nf4_dq's second-level
    mean, by PyTorch's sum (its order of additions is the format's; scale_codes.py uses this too)."""
    finite = torch.isfinite(flat) if finite is None else finite
    kept = torch.where(finite, flat, torch.zeros_like(flat))
    return kept.sum().reshape(1) / finite.sum().clamp_min(1).to(torch.float32).reshape(1)


def double_quantize(scales: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ScaleQuant]:
    """float32 first-level scales [R, C] -> (uint8 scale codes [R, C], the second level); see
    spec.py, nf4_dq. A NaN scale (poisoned segment) gets code 0 and is left out of the mean and
    of its chunk's maximum."""
    flat = scales.reshape(-1)
    finite = torch.isfinite(flat)
    mean = finite_mean(flat, finite)
    dev = torch.where(finite, flat - mean, torch.zeros_like(flat))
    chunks = math.ceil(flat.numel() / DQ_CHUNK)
    dev = torch.nn.functional.pad(dev, (0, chunks * DQ_CHUNK - flat.numel())).reshape(chunks, DQ_CHUNK)
    # divide by tensors: on CUDA, division by a Python number is a multiplication by its reciprocal
    chunk_scales = dev.abs().amax(dim=1) / torch.full((chunks,), 127.0, device=flat.device)
    chunk_scales = torch.where(chunk_scales == 0, torch.ones_like(chunk_scales), chunk_scales)
    codes = (dev / chunk_scales[:, None]).round().clamp(-127, 127).reshape(-1)[:flat.numel()] + 128
    codes = torch.where(finite, codes, torch.zeros_like(codes)).to(torch.uint8)
    return codes.reshape(scales.shape), ScaleQuant(chunk_scales, mean, dtype)


def decode_scales(codes: torch.Tensor, second: ScaleQuant) -> torch.Tensor:
    """The nf4_dq scales a kernel computes with: (code - 128) * chunk scale + mean in float32 (two
    operations, never fused), rounded to the weight's dtype, 1 where that is 0; NaN for code 0."""
    flat = codes.reshape(-1)
    per_group = second.chunk_scales.repeat_interleave(DQ_CHUNK)[:flat.numel()]
    s = (flat.float() - 128) * per_group
    s = s + second.mean
    s = torch.where(flat == 0, torch.full_like(s, float("nan")), s).to(second.dtype)
    return torch.where(s == 0, torch.ones_like(s), s).reshape(codes.shape)


def scales_of(q: QuantizedTensor) -> torch.Tensor:
    """The scales q's codes were computed from (decoded, for nf4_dq)."""
    return q.scales if q.second is None else decode_scales(q.scales, q.second)
