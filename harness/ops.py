"""The table of ops and their implementations. Each op says which axes apply to it, how to make
its inputs, how to check an implementation against the reference, and what it moves.

An implementation is a plain closure: it takes the prepared inputs and returns a zero-argument
callable, which is what gets timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from quantbench import kernels
from quantbench.kernels.spec import FLOAT_DTYPES, QuantizedTensor, QuantSpec

from . import metrics

Provider = Callable[[Any], Callable[[], Any]]


class Skipped(Exception):
    """An implementation that cannot run this case here (no GPU, wrong dtype, unsupported shape);
    the row says `skipped` and why."""


@dataclass(frozen=True)
class WeightInputs:
    w: torch.Tensor
    spec: QuantSpec


@dataclass(frozen=True)
class CodeInputs:
    w: torch.Tensor
    q: QuantizedTensor


def _spec(case) -> QuantSpec:
    return QuantSpec(case.bits, case.scheme, case.granularity, case.group_size)


def _elem(case) -> int:
    return torch.finfo(FLOAT_DTYPES[case.dtype]).bits // 8


class FormatOp:
    """What the ops on one weight matrix share: their axes, no FLOPs, the quantized weight's memory."""

    axes = frozenset({"bits", "scheme", "granularity", "group_size", "dtype", "N", "K"})
    reference = "torch"
    checked = frozenset({"triton"})  # implementations whose output is checked against the reference

    def flops(self, case) -> int | None:
        return None

    def memory(self, case) -> dict[str, float]:
        return metrics.weight_memory(_spec(case), case.N, case.K, case.dtype)


class QuantizeOp(FormatOp):
    """W [N, K] float -> packed codes, scales, zeros."""

    name = "quantize"
    impls: dict[str, Provider] = {
        "triton": lambda inp: lambda: kernels.quantize(inp.w, inp.spec),
        "torch": lambda inp: lambda: kernels.quantize_ref(inp.w, inp.spec),
    }

    def prepare(self, case, w: torch.Tensor, seed: int) -> WeightInputs:
        return WeightInputs(w, _spec(case))

    def verify(self, out: QuantizedTensor, ref: QuantizedTensor, inp: WeightInputs) -> str | None:
        """The contract is exact: codes, scales and zeros equal the reference's."""
        for part in ("codes", "scales", "zeros"):
            a, b = getattr(out, part), getattr(ref, part)
            if a is not None and (msg := metrics.mismatches(a, b)):
                return f"{part} differ from the reference: {msg}"
        return None

    def error(self, impl: str, out: QuantizedTensor, inp: WeightInputs) -> dict[str, float]:
        dequant = kernels.dequantize if impl == "triton" else kernels.dequantize_ref
        return metrics.weight_error(inp.w, dequant(out))

    def bytes_moved(self, case) -> int:
        """Read W once, write the quantized weight once."""
        return case.N * case.K * _elem(case) + _spec(case).nbytes(case.N, case.K, FLOAT_DTYPES[case.dtype])


class DequantizeOp(FormatOp):
    """Packed codes, scales, zeros -> W_hat [N, K] in the weight's dtype."""

    name = "dequantize"
    impls: dict[str, Provider] = {
        "triton": lambda inp: lambda: kernels.dequantize(inp.q),
        "torch": lambda inp: lambda: kernels.dequantize_ref(inp.q),
    }

    def prepare(self, case, w: torch.Tensor, seed: int) -> CodeInputs:
        return CodeInputs(w, kernels.quantize_ref(w, _spec(case)))

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: CodeInputs) -> str | None:
        msg = metrics.mismatches(out, ref, metrics.dequant_close(out, ref))
        return f"values differ from the reference beyond float rounding: {msg}" if msg else None

    def error(self, impl: str, out: torch.Tensor, inp: CodeInputs) -> dict[str, float]:
        return metrics.weight_error(inp.w, out)

    def bytes_moved(self, case) -> int:
        """Read the quantized weight once, write W_hat once."""
        return _spec(case).nbytes(case.N, case.K, FLOAT_DTYPES[case.dtype]) + case.N * case.K * _elem(case)


@dataclass(frozen=True)
class MatmulInputs:
    x: torch.Tensor
    w: torch.Tensor
    q: QuantizedTensor
    y_exact: torch.Tensor  # float64 x @ W^T, the original weights
    y_quant: torch.Tensor  # float64 x @ W_hat^T, the same quantized weights every kernel uses


def _tinygemm(inp: MatmulInputs) -> Callable[[], torch.Tensor]:
    """PyTorch's tinygemm int4 kernel on the same quantized weights. tinygemm dequantizes
    (q - 8) * scale + zero, so our zero (the group minimum) becomes zero + 8 * scale."""
    q, x = inp.q, inp.x
    spec = q.spec
    if not x.is_cuda:
        raise Skipped("tinygemm needs a CUDA GPU")
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


class MatmulOp(FormatOp):
    """y [M, N] = x [M, K] @ W_hat^T: weight-only quantized matmul (WxA16), dequantization fused."""

    name = "matmul"
    axes = FormatOp.axes | {"M"}
    checked = frozenset({"triton", "tinygemm"})
    impls: dict[str, Provider] = {
        "triton": lambda inp: lambda: kernels.qmatmul(inp.x, inp.q),
        "torch": lambda inp: lambda: kernels.qmatmul_ref(inp.x, inp.q),
        "fp16": lambda inp: lambda: torch.nn.functional.linear(inp.x, inp.w),
        "tinygemm": _tinygemm,
    }

    def prepare(self, case, w: torch.Tensor, seed: int) -> MatmulInputs:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(case.M, case.K, generator=gen).to(w.dtype).to(w.device)
        q = kernels.quantize_ref(w, _spec(case))
        x64 = x.double()
        return MatmulInputs(x, w, q, x64 @ w.double().t(), x64 @ kernels.dequantize_ref(q, torch.float32).double().t())

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: MatmulInputs) -> str | None:
        """Against the float64 product with the same quantized weights: the output is rounded once
        to its dtype and accumulated in float32 over K terms."""
        rel, _ = metrics.output_error(out, inp.y_quant)
        bound = 2 * torch.finfo(out.dtype).eps + inp.x.shape[1] * torch.finfo(torch.float32).eps
        return None if rel <= bound else f"relative error {rel:.3g} against the float64 product exceeds {bound:.3g}"

    def error(self, impl: str, out: torch.Tensor, inp: MatmulInputs) -> dict[str, float]:
        unquantized = impl == "fp16"
        method_rel, method_snr = (0.0, math.inf) if unquantized else metrics.output_error(inp.y_quant, inp.y_exact)
        kernel_rel, kernel_snr = metrics.output_error(out, inp.y_exact if unquantized else inp.y_quant)
        w_hat = inp.w if unquantized else kernels.dequantize_ref(inp.q, torch.float32)
        return {
            **metrics.weight_error(inp.w, w_hat),
            "method_rel_err": method_rel, "method_snr_db": method_snr,
            "kernel_rel_err": kernel_rel, "kernel_snr_db": kernel_snr,
            **metrics.output_difference(out, inp.y_exact),
        }

    def memory(self, case) -> dict[str, float]:
        if case.impl == "fp16":  # the unquantized weight it reads
            nbytes = case.N * case.K * _elem(case)
            return {"weight_bytes": nbytes, "bits_per_weight": 8 * _elem(case),
                    "compression_vs_fp16": 2 / _elem(case), "compression_vs_fp32": 4 / _elem(case)}
        return super().memory(case)

    def bytes_moved(self, case) -> int:
        """Read x and the weight (quantized, or fp16 for the unquantized baseline) once, write y once."""
        e = _elem(case)
        return case.M * case.K * e + self.memory(case)["weight_bytes"] + case.M * case.N * e

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K


OPS = {op.name: op for op in (QuantizeOp(), DequantizeOp(), MatmulOp())}
IMPLS = tuple(dict.fromkeys(impl for op in OPS.values() for impl in op.impls))
