"""The ops on one weight matrix alone: quantize (W -> codes, scales, zeros) and dequantize (back).

An implementation with its own weight format (Impl.own_format: a library's NF4, say) is checked
against its own W_hat rather than the reference's codes: quantize through the format's `decode`
of what it returns, dequantize by its output. Its error is that W_hat's against W, and its memory
columns the format's own weight_bytes (execution/case.py: prepared)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import torch

from quantbench import kernels
from quantbench.kernels.spec import QuantizedTensor, QuantSpec

from . import metrics
from .base import FormatOp, own_w_hat, spec_of

if TYPE_CHECKING:
    from ..registry.records import Impl, OwnWeights


@dataclass(frozen=True)
class WeightInputs:
    w: torch.Tensor
    spec: QuantSpec
    own: Any = None  # an implementation's own prepared state (Impl.own_format), else None
    own_w_hat: torch.Tensor | None = None  # that format's W_hat of w, float [N, K]
    own_decode: Callable[[Any], torch.Tensor] | None = None  # the callable's output -> its W_hat


@dataclass(frozen=True)
class CodeInputs:
    w: torch.Tensor
    q: QuantizedTensor
    own: Any = None  # an implementation's own prepared weights (Impl.own_format), else None
    own_w_hat: torch.Tensor | None = None  # what they dequantize to, float [N, K]


def w_hat_problem(w_hat: torch.Tensor, expected: torch.Tensor) -> str | None:
    """An implementation's W_hat against its own format's, up to float rounding of its dtype (the
    rule DequantizeOp.verify applies to the reference's output)."""
    if tuple(w_hat.shape) != tuple(expected.shape):
        return f"W_hat has shape {list(w_hat.shape)}, its format's has {list(expected.shape)}"
    expected = expected.to(device=w_hat.device, dtype=w_hat.dtype)
    msg = metrics.mismatches(w_hat, expected, metrics.dequant_close(w_hat, expected))
    return f"values differ from the format's own W_hat beyond float rounding: {msg}" if msg else None


class QuantizeOp(FormatOp):
    """W [N, K] float -> packed codes, scales, zeros."""

    name = "quantize"

    def prepare(self, case, source) -> WeightInputs:
        return WeightInputs(source.weight(case), spec_of(case))

    def with_own(self, inp: WeightInputs, own: "OwnWeights") -> WeightInputs:
        """The inputs of an implementation with its own format: its prepared state as `own`, the
        format's W_hat and the decoding of what its callable returns, which its row is verified
        and measured by."""
        if own.decode is None:
            raise ValueError("own_format of a quantize implementation must give `decode` (its output -> W_hat)")
        return replace(inp, own=own.state, own_w_hat=own_w_hat(inp.w, own), own_decode=own.decode)

    def verify(self, out: Any, ref: QuantizedTensor, inp: WeightInputs) -> str | None:
        """The contract is exact: codes, scales and zeros equal the reference's. An own format:
        its decoded output equals the format's W_hat up to float rounding."""
        if inp.own_decode is not None:
            return w_hat_problem(inp.own_decode(out), inp.own_w_hat)
        # nf4_dq's second level (chunk scales and mean) is part of the weight: a wrong one decodes
        # every scale wrong with codes and scale codes equal
        ref_second, out_second = ref.second, getattr(out, "second", None)
        parts = [(part, getattr(out, part), getattr(ref, part)) for part in ("codes", "scales", "zeros")]
        if ref_second is not None and out_second is not None:
            parts += [(f"second-level {part}", getattr(out_second, part), getattr(ref_second, part))
                      for part in ("chunk_scales", "mean")]
        elif (ref_second is None) != (out_second is None):
            parts.append(("second-level scales", out_second, ref_second))
        for part, a, b in parts:
            if (a is None) != (b is None):
                return f"{part}: {'missing' if a is None else 'given'}, the reference has {'none' if b is None else 'them'}"
            if a is None:
                continue
            if tuple(a.shape) != tuple(b.shape):  # broadcasting would compare [1, 1] against [N, 1]
                return f"{part} have shape {list(a.shape)}, the reference's {list(b.shape)}"
            if msg := metrics.mismatches(a, b):
                return f"{part} differ from the reference: {msg}"
        return None

    def error(self, impl: "Impl", out: Any, inp: WeightInputs) -> dict[str, float]:
        w_hat = inp.own_decode(out) if inp.own_decode is not None else kernels.dequantize_ref(out)
        return metrics.weight_error(inp.w, w_hat)


class DequantizeOp(FormatOp):
    """Packed codes, scales, zeros -> W_hat [N, K] in the weight's dtype."""

    name = "dequantize"

    def prepare(self, case, source) -> CodeInputs:
        w = source.weight(case)
        return CodeInputs(w, kernels.quantize_ref(w, spec_of(case)))

    def with_own(self, inp: CodeInputs, own: "OwnWeights") -> CodeInputs:
        """The inputs of an implementation with its own format: its prepared weights as `own` and
        the W_hat they stand for, which its output is verified against."""
        return replace(inp, own=own.state, own_w_hat=own_w_hat(inp.w, own))

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: CodeInputs) -> str | None:
        if inp.own_w_hat is not None:
            return w_hat_problem(out, inp.own_w_hat)
        msg = metrics.mismatches(out, ref, metrics.dequant_close(out, ref))
        return f"values differ from the reference beyond float rounding: {msg}" if msg else None

    def error(self, impl: "Impl", out: torch.Tensor, inp: CodeInputs) -> dict[str, float]:
        """The output is W_hat, the case's or the implementation's own: its error against W."""
        return metrics.weight_error(inp.w, out)
