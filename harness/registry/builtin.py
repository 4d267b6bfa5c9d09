"""The built-in implementations: one explicit list of records. The project's Triton kernels are
the candidates, their PyTorch references the references, cuBLAS in the activations' dtype the
dense baseline, and PyTorch's own quantized kernels (tinygemm, torch._int_mm, torch._scaled_mm in
fp8) and torch.compile of the reference the peers."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from quantbench import kernels

from ..config import first_line
from ..ops import MatmulInputs, Skipped, W8A8Inputs, chain
from .records import Impl, Needs, OwnWeights, Role

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448.0


def _tinygemm(inp: MatmulInputs) -> Callable[[], torch.Tensor]:
    """PyTorch's tinygemm int4 kernel on the same quantized weights. tinygemm dequantizes
    (q - 8) * scale + zero, so our zero (the group minimum) becomes zero + 8 * scale."""
    q, x = inp.q, inp.x
    spec = q.spec
    if spec.bits != 4 or spec.granularity != "group" or spec.codebook != "integer":
        raise Skipped("tinygemm takes 4-bit integer codes with per-group scales only")
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
    """The kernel qmatmul picks for the inputs (matmul, and every layer of a stack: one format, but
    a layer whose values may pass x's range takes dequantize+cublas: each kernel taken, in order)."""
    qs = [inp.q] if hasattr(inp, "q") else inp.qs
    return ", ".join(dict.fromkeys(kernels.qmatmul_route(inp.x, q) for q in qs))


def _qmatmul_config(inp) -> str | None:
    """How qmatmul's kernel was launched for the inputs (a stack: its last layer's)."""
    q = inp.q if hasattr(inp, "q") else inp.qs[-1]
    return kernels.qmatmul_config(inp.x, q)


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


def fp8_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row float8 e4m3 of t [R, C]: scale = max|row| / 448 in float32 (1 for an all-zero row,
    the project's degenerate-range rule), codes = row / scale clamped to +-448 (the scale may be
    rounded down) and cast to e4m3 (torch's cast: nearest, ties to even). Returns (codes [R, C]
    e4m3, scales [R] float32). The timed call and the format's product both run this, on the same
    device, so their codes and scales agree bit for bit."""
    t = t.float()
    scale = t.abs().amax(dim=1) / E4M3_MAX
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return (t / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def fp8_rowwise_product(xq: torch.Tensor, sx: torch.Tensor, wq: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """The float64 output of a per-row fp8 product: (xq [M, K] @ wq [N, K]^T) * sx[m] * sw[n], the
    scales given as [M] or [M, 1] and [N] or [N, 1]. Each e4m3 product is exact in float64 and the
    sums are float64: the method's exact output up to float64 rounding."""
    return (xq.double() @ wq.double().t()) * sx.double().reshape(-1, 1) * sw.double().reshape(1, -1)


@functools.lru_cache(maxsize=None)
def scaled_mm_refusal(dtype: torch.dtype, device: torch.device) -> str | None:
    """Why rowwise torch._scaled_mm will not write `dtype` on `device`, or None. It depends on the
    GPU, the torch build and its cuBLAS: cuBLAS 12.9+ on sm90 writes bfloat16, float16 and float32;
    torch's CUTLASS kernel (sm89, older cuBLAS) bfloat16, and float16 only in newer torch. So torch
    is asked, once, with a 16 x 16 x 16 product."""
    a = torch.zeros(16, 16, device=device).to(E4M3)
    ones = torch.ones(16, 1, device=device)
    try:
        torch._scaled_mm(a, a.t(), scale_a=ones, scale_b=ones.t(), out_dtype=dtype)
    except (RuntimeError, ValueError) as e:  # TORCH_CHECK / TORCH_CHECK_VALUE: the message says why
        return first_line(e)
    return None


def _fp8_rowwise_format(w: torch.Tensor, case) -> OwnWeights:
    """own_format of fp8_rowwise: W per row in e4m3 (fp8_rows), N*K code bytes and N float32 scales;
    its product quantizes x per row the same way (the method quantizes activations too)."""
    n, k = w.shape
    if k % 16 or n % 16:
        raise Skipped(f"torch._scaled_mm needs K and N multiples of 16, got N={n}, K={k}")
    refusal = scaled_mm_refusal(w.dtype, w.device)
    if refusal:
        raise Skipped(f"rowwise torch._scaled_mm does not write {str(w.dtype).removeprefix('torch.')} here: {refusal}")
    wq, sw = fp8_rows(w)
    # W_hat in float64: an e4m3 code (4 significant bits) times a float32 scale needs 28
    return OwnWeights(state=(wq, sw), w_hat=wq.double() * sw.double()[:, None], weight_bytes=n * k + 4 * n,
                      product=lambda x: fp8_rowwise_product(*fp8_rows(x), wq, sw))


def _fp8_rowwise(inp: W8A8Inputs) -> Callable[[], torch.Tensor]:
    """torch._scaled_mm with one float32 scale per row of x and of W (rowwise scaling): x is
    quantized inside the call, W once (the own format); float32 accumulation (use_fast_accum off)."""
    x, (wq, sw) = inp.x, inp.own
    w_t, scale_b = wq.t(), sw[None, :]  # a transposed view of row-major [N, K]: the layout _scaled_mm takes

    def run() -> torch.Tensor:
        xq, sx = fp8_rows(x)
        return torch._scaled_mm(xq, w_t, scale_a=sx[:, None], scale_b=scale_b, out_dtype=x.dtype)
    return run


def _dense(inp) -> Callable[[], torch.Tensor]:
    return lambda: torch.nn.functional.linear(inp.x, inp.w)


CUDA = Needs(cuda=True)
C, R, P, B = Role.CANDIDATE, Role.REFERENCE, Role.PEER, Role.BASELINE

BUILTIN_IMPLS: list[Impl] = [
    Impl(op="quantize", name="triton", role=C, factory=lambda inp: lambda: kernels.quantize(inp.w, inp.spec),
         kernel_config=lambda inp: kernels.quantize_choice(inp.spec, *inp.w.shape),
         description="the project's Triton quantizer"),
    Impl(op="quantize", name="torch", role=R, factory=lambda inp: lambda: kernels.quantize_ref(inp.w, inp.spec),
         description="PyTorch reference"),
    Impl(op="dequantize", name="triton", role=C, factory=lambda inp: lambda: kernels.dequantize(inp.q),
         kernel_config=lambda inp: kernels.dequantize_choice(inp.q, inp.q.dtype),
         description="the project's Triton dequantizer"),
    Impl(op="dequantize", name="torch", role=R, factory=lambda inp: lambda: kernels.dequantize_ref(inp.q),
         description="PyTorch reference"),
    Impl(op="matmul", name="triton", role=C, factory=lambda inp: lambda: kernels.qmatmul(inp.x, inp.q),
         path=_qmatmul_path, kernel_config=_qmatmul_config,
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
         path=_qmatmul_path, kernel_config=_qmatmul_config,
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
    Impl(op="matmul_w8a8", name="fp8_rowwise", role=P, factory=_fp8_rowwise, own_format=_fp8_rowwise_format,
         needs=Needs(cuda=True, min_capability=(8, 9)),
         description="torch._scaled_mm, float8 e4m3 x and W with one float32 scale per row"),
]
