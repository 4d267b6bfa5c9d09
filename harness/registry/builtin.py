"""The built-in implementations: one explicit list of records. The project's Triton kernels are
the candidates, their PyTorch references the references, cuBLAS in the activations' dtype the
dense baseline, and PyTorch's own quantized kernels (tinygemm, torch._int_mm) and torch.compile
of the reference the peers."""

from __future__ import annotations

from typing import Callable

import torch

from quantbench import kernels

from ..ops import MatmulInputs, Skipped, W8A8Inputs, chain
from .records import Impl, Needs, Role


def _tinygemm(inp: MatmulInputs) -> Callable[[], torch.Tensor]:
    """PyTorch's tinygemm int4 kernel on the same quantized weights. tinygemm dequantizes
    (q - 8) * scale + zero, so our zero (the group minimum) becomes zero + 8 * scale."""
    q, x = inp.q, inp.x
    spec = q.spec
    if spec.bits != 4 or spec.granularity != "group":
        raise Skipped("tinygemm takes 4-bit codes with per-group scales only")
    if x.dtype != torch.bfloat16:
        raise Skipped(f"tinygemm takes bfloat16 activations, not {str(x.dtype).removeprefix('torch.')}")
    n, k = q.shape
    if k % 1024 or n % 8:
        raise Skipped(f"tinygemm's packing (8 inner K tiles) needs K % 1024 == 0 and N % 8 == 0, got [{n}, {k}]")
    fields = kernels.unpack_fields(q.codes, 4, k)
    high_first = ((fields[:, ::2] << 4) | fields[:, 1::2]).to(torch.uint8)
    packed = torch.ops.aten._convert_weight_to_int4pack(high_first, 8)
    scale = q.scales.float()
    zero = (q.zeros.float() + 8 * scale) if q.zeros is not None else torch.zeros_like(scale)
    scales_zeros = torch.stack([scale, zero], dim=2).transpose(0, 1).contiguous().to(torch.bfloat16)
    group = spec.group_size
    return lambda: torch.ops.aten._weight_int4pack_mm(x, packed, group, scales_zeros)


def _qmatmul_path(inp) -> str:
    """The kernel qmatmul picks for the inputs (matmul, and every layer of a stack: one format)."""
    q = inp.q if hasattr(inp, "q") else inp.qs[0]
    return kernels.qmatmul_path(inp.x.shape[0], inp.x.dtype, q.spec.bits)


def _compiled(fn, *args) -> Callable[[], torch.Tensor]:
    """fn(*args) under torch.compile. Dynamo's caches are cleared first: every workload is a new
    shape, and past its recompile limit Dynamo would fall back to eager without saying so. The
    compilation happens in the first call, which the harness times apart (first_call_ms)."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, dynamic=False)
    return lambda: compiled(*args)


def _int_mm(inp: W8A8Inputs) -> Callable[[], torch.Tensor]:
    """PyTorch's own int8 GEMM (cuBLASLt) in the same dynamic W8A8 recipe: per-token quantization
    and the scales in PyTorch around torch._int_mm."""
    m, k = inp.x.shape
    n = inp.w_int8.shape[0]
    if m <= 16 or k % 8 or n % 8:
        raise Skipped(f"torch._int_mm needs M > 16 and K, N multiples of 8, got M={m}, N={n}, K={k}")
    w_t = inp.w_int8.t()  # a transposed view of row-major [N, K]: the layout cuBLASLt is fastest with

    def run() -> torch.Tensor:
        xq, sx = kernels.quantize_tokens_ref(inp.x)
        return (torch._int_mm(xq, w_t).float() * sx[:, None] * inp.w_scales[None, :]).to(inp.x.dtype)
    return run


def _dense(inp) -> Callable[[], torch.Tensor]:
    return lambda: torch.nn.functional.linear(inp.x, inp.w)


CUDA = Needs(cuda=True)
C, R, P, B = Role.CANDIDATE, Role.REFERENCE, Role.PEER, Role.BASELINE

BUILTIN_IMPLS: list[Impl] = [
    Impl(op="quantize", name="triton", role=C, factory=lambda inp: lambda: kernels.quantize(inp.w, inp.spec),
         description="the project's Triton quantizer"),
    Impl(op="quantize", name="torch", role=R, factory=lambda inp: lambda: kernels.quantize_ref(inp.w, inp.spec),
         description="PyTorch reference"),
    Impl(op="dequantize", name="triton", role=C, factory=lambda inp: lambda: kernels.dequantize(inp.q),
         description="the project's Triton dequantizer"),
    Impl(op="dequantize", name="torch", role=R, factory=lambda inp: lambda: kernels.dequantize_ref(inp.q),
         description="PyTorch reference"),
    Impl(op="matmul", name="triton", role=C, factory=lambda inp: lambda: kernels.qmatmul(inp.x, inp.q),
         path=_qmatmul_path,
         description="the project's dequantize-matmul (GEMV, split-K GEMM, GEMM, dequantize+cuBLAS by M)"),
    Impl(op="matmul", name="torch", role=R, factory=lambda inp: lambda: kernels.qmatmul_ref(inp.x, inp.q),
         description="dequantize, then matmul (the seed notebook's forward pass)"),
    Impl(op="matmul", name="torch_compile", role=P,
         factory=lambda inp: _compiled(kernels.qmatmul_ref, inp.x, inp.q),
         description="the reference under torch.compile (compile time in first_call_ms)"),
    Impl(op="matmul", name="fp16", role=B, factory=_dense,
         description="unquantized weights through cuBLAS in the activations' dtype"),
    Impl(op="matmul", name="tinygemm", role=P, factory=_tinygemm, needs=CUDA,
         description="PyTorch's _weight_int4pack_mm (int4 per group, bfloat16)"),
    Impl(op="stack", name="triton", role=C, factory=lambda inp: lambda: chain(kernels.qmatmul, inp.x, inp.qs),
         path=_qmatmul_path,
         description="the project's matmul, layer after layer"),
    Impl(op="stack", name="torch", role=R, factory=lambda inp: lambda: chain(kernels.qmatmul_ref, inp.x, inp.qs),
         description="the reference, layer after layer"),
    Impl(op="stack", name="fp16", role=B,
         factory=lambda inp: lambda: chain(torch.nn.functional.linear, inp.x, inp.ws),
         description="unquantized layers through cuBLAS"),
    Impl(op="matmul_w8a8", name="triton", role=C,
         factory=lambda inp: lambda: kernels.w8a8_matmul(inp.x, inp.w_int8, inp.w_scales),
         description="the project's per-token int8 activations x int8 weights"),
    Impl(op="matmul_w8a8", name="torch", role=R,
         factory=lambda inp: lambda: kernels.w8a8_matmul_ref(inp.x, inp.w_int8, inp.w_scales),
         description="PyTorch reference"),
    Impl(op="matmul_w8a8", name="fp16", role=B, factory=_dense,
         description="unquantized weights through cuBLAS in the activations' dtype"),
    Impl(op="matmul_w8a8", name="int_mm", role=P, factory=_int_mm, needs=CUDA,
         description="torch._int_mm (cuBLASLt int8) in the same recipe"),
]
