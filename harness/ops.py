"""The table of ops and their implementations. Each op says which axes apply to it, how to make
its inputs, how to check an implementation against the reference, and what it moves.

An implementation is a plain closure: it takes the prepared inputs and returns a zero-argument
callable, which is what gets timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from quantbench import kernels
from quantbench.kernels.spec import FLOAT_DTYPES, QuantizedTensor, QuantSpec

from . import metrics

Provider = Callable[[Any], Callable[[], Any]]


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

    def prepare(self, case, w: torch.Tensor) -> WeightInputs:
        return WeightInputs(w, _spec(case))

    def verify(self, out: QuantizedTensor, ref: QuantizedTensor) -> str | None:
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

    def prepare(self, case, w: torch.Tensor) -> CodeInputs:
        return CodeInputs(w, kernels.quantize_ref(w, _spec(case)))

    def verify(self, out: torch.Tensor, ref: torch.Tensor) -> str | None:
        msg = metrics.mismatches(out, ref, metrics.dequant_close(out, ref))
        return f"values differ from the reference beyond float rounding: {msg}" if msg else None

    def error(self, impl: str, out: torch.Tensor, inp: CodeInputs) -> dict[str, float]:
        return metrics.weight_error(inp.w, out)

    def bytes_moved(self, case) -> int:
        """Read the quantized weight once, write W_hat once."""
        return _spec(case).nbytes(case.N, case.K, FLOAT_DTYPES[case.dtype]) + case.N * case.K * _elem(case)


OPS = {op.name: op for op in (QuantizeOp(), DequantizeOp())}
IMPLS = tuple(dict.fromkeys(impl for op in OPS.values() for impl in op.impls))
