"""The ops on one weight matrix alone: quantize (W -> codes, scales, zeros) and dequantize (back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from quantbench import kernels
from quantbench.kernels.spec import QuantizedTensor, QuantSpec

from . import metrics
from .base import FormatOp, spec_of

if TYPE_CHECKING:
    from ..registry.records import Impl


@dataclass(frozen=True)
class WeightInputs:
    w: torch.Tensor
    spec: QuantSpec


@dataclass(frozen=True)
class CodeInputs:
    w: torch.Tensor
    q: QuantizedTensor


class QuantizeOp(FormatOp):
    """W [N, K] float -> packed codes, scales, zeros."""

    name = "quantize"

    def prepare(self, case, source) -> WeightInputs:
        return WeightInputs(source.weight(case), spec_of(case))

    def verify(self, out: QuantizedTensor, ref: QuantizedTensor, inp: WeightInputs) -> str | None:
        """The contract is exact: codes, scales and zeros equal the reference's."""
        for part in ("codes", "scales", "zeros"):
            a, b = getattr(out, part), getattr(ref, part)
            if a is not None and (msg := metrics.mismatches(a, b)):
                return f"{part} differ from the reference: {msg}"
        return None

    def error(self, impl: "Impl", out: QuantizedTensor, inp: WeightInputs) -> dict[str, float]:
        return metrics.weight_error(inp.w, kernels.dequantize_ref(out))


class DequantizeOp(FormatOp):
    """Packed codes, scales, zeros -> W_hat [N, K] in the weight's dtype."""

    name = "dequantize"

    def prepare(self, case, source) -> CodeInputs:
        w = source.weight(case)
        return CodeInputs(w, kernels.quantize_ref(w, spec_of(case)))

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: CodeInputs) -> str | None:
        msg = metrics.mismatches(out, ref, metrics.dequant_close(out, ref))
        return f"values differ from the reference beyond float rounding: {msg}" if msg else None

    def error(self, impl: "Impl", out: torch.Tensor, inp: CodeInputs) -> dict[str, float]:
        return metrics.weight_error(inp.w, out)
