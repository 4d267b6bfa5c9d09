"""nf4_dq's second level made on the GPU: the 8-bit codes of the first-level scales and their
chunk scales (double_quantize_scales), the same bits as codebooks.double_quantize.

quantize used to run codebooks.double_quantize and decode_scales between its two passes: about 35
PyTorch operations, each a launch, 150-550 us of host time on an H200 (kernels/NOTES.md, session
16) for a few microseconds of GPU work, with the GPU idle while the host caught up. Here the mean
is still PyTorch's (codebooks.finite_mean: its order of additions is the format's), the rest is one
kernel, and the codes pass decodes the scales itself (quantization.quantize_kernel, MODE 3, with
dequantization.segment_scales), so no decoded tensor is made.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import cdiv
from .codebooks import finite_mean
from .exact_math import round_half_even
from .launching import Launcher
from .spec import DQ_CHUNK, ScaleQuant


@triton.jit
def double_quantize_kernel(scales_ptr, mean_ptr, codes_ptr, chunk_scales_ptr, n, CHUNK: tl.constexpr):
    """One program per chunk of CHUNK float32 first-level scales (flat, n in all): dev = scale -
    mean, the chunk's scale max |dev| / 127 (1 where that is 0), the codes round(dev / chunk scale)
    (ties to even) clamped to [-127, 127], plus 128. A scale that is not finite (a poisoned
    segment) is left out (dev 0) and gets code 0. Each operation is correctly rounded, as
    codebooks.double_quantize's PyTorch ops are, in the same order: the same bits."""
    chunk = tl.program_id(0)
    offs = chunk * CHUNK + tl.arange(0, CHUNK)
    inside = offs < n
    s = tl.load(scales_ptr + offs, mask=inside, other=0.0)
    kept = inside & (tl.abs(s) < float("inf"))  # False for +-inf and NaN
    dev = tl.where(kept, s - tl.load(mean_ptr), 0.0)
    absmax = tl.max(tl.abs(dev), axis=0)
    chunk_scale = tl.div_rn(absmax, 127.0)
    chunk_scale = tl.where(chunk_scale == 0.0, 1.0, chunk_scale)
    v = round_half_even(tl.div_rn(dev, tl.zeros_like(dev) + chunk_scale))
    code = tl.minimum(tl.maximum(v, -127.0), 127.0) + 128.0
    tl.store(codes_ptr + offs, tl.where(kept, code, 0.0).to(tl.uint8), mask=inside)
    tl.store(chunk_scales_ptr + chunk, chunk_scale)


_double_quantize_launch = Launcher(double_quantize_kernel)


def double_quantize_scales(scales: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ScaleQuant]:
    """codebooks.double_quantize (float32 first-level scales -> uint8 codes of the same shape, and
    the second level) with the mean from PyTorch and the rest in one kernel. scales contiguous."""
    flat = scales.reshape(-1)
    mean = finite_mean(flat)
    chunks = cdiv(flat.numel(), DQ_CHUNK)
    codes = torch.empty(scales.shape, dtype=torch.uint8, device=scales.device)
    chunk_scales = torch.empty(chunks, dtype=torch.float32, device=scales.device)
    _double_quantize_launch(lambda meta: (chunks,), (flat, mean, codes, chunk_scales, flat.numel()),
                            dict(CHUNK=DQ_CHUNK, num_warps=2))
    return codes, ScaleQuant(chunk_scales, mean, dtype)
