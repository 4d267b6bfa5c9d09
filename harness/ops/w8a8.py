"""W8A8: activations quantized per token on the fly, weights per channel, both int8.

An implementation with its own format (Impl.own_format: fp8 rowwise, say) brings its method's
float64 output (OwnWeights.product), which its row is verified and measured against: by the matmul
rule, since its sums are float accumulations, not the int8 method's exact integer sums."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from quantbench import kernels

from ..results.schema import DTYPE_CEILING, INT8_CEILING
from . import metrics
from .base import FormatOp, bytes_memory, spec_of, unquantized
from .matmul import layer_memory, linear_bytes, output_errors, own_product, product_problem

if TYPE_CHECKING:
    from ..registry.records import Impl, OwnWeights


@dataclass(frozen=True)
class W8A8Inputs:
    x: torch.Tensor
    w: torch.Tensor
    w_int8: torch.Tensor
    w_scales: torch.Tensor
    y_exact: torch.Tensor  # float64 x @ W^T
    y_quant: torch.Tensor  # float64 result of the W8A8 method: quantized x and W, exact integer sums
    own: Any = None  # an implementation's own prepared weights (Impl.own_format), else None
    own_format: bool = False  # y_quant is that format's product (float sums), not the int8 method's


class W8A8MatmulOp(FormatOp):
    """y [M, N] = x [M, K] @ W^T with x quantized per token on the fly and W per channel, both
    symmetric int8; int32 accumulation, scales in the epilogue."""

    name = "matmul_w8a8"
    axes = frozenset({"dtype", "M", "N", "K"})
    fixed = {"bits": 8, "scheme": "symmetric", "granularity": "channel"}

    def prepare(self, case, source) -> W8A8Inputs:
        w, x = source.weight(case), source.x(case)
        w_int8, w_scales = kernels.pack_weights(kernels.quantize_ref(w, spec_of(case)))
        xq, sx = kernels.quantize_tokens_ref(x)
        y_quant = (xq.double() @ w_int8.double().t()) * sx.double()[:, None] * w_scales.double()[None, :]
        return W8A8Inputs(x, w, w_int8, w_scales, x.double() @ w.double().t(), y_quant)

    def with_own(self, inp: W8A8Inputs, own: "OwnWeights") -> W8A8Inputs:
        """The inputs of an implementation with its own format: its prepared state as `own` and the
        float64 output of its method (own_product: OwnWeights.product, which quantizes x its own
        way), which its row is verified and measured against. The row's memory is the format's
        weight_bytes (execution/case.py: prepared)."""
        _, y_quant = own_product(inp.x, inp.w, own)
        return replace(inp, own=own.state, y_quant=y_quant, own_format=True)

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: W8A8Inputs) -> str | None:
        """Integer sums are exact: what remains is the float32 epilogue and one rounding. An own
        format's sums are float accumulations (fp8 products in float32): the matmul rule."""
        if inp.own_format:
            return product_problem(out, inp.y_quant, inp.x.shape[1])
        rel, _ = metrics.output_error(out, inp.y_quant)
        bound = 2 * torch.finfo(out.dtype).eps
        return None if rel <= bound else f"relative error {rel:.3g} against the exact W8A8 result exceeds {bound:.3g}"

    def error(self, impl: "Impl", out: torch.Tensor, inp: W8A8Inputs) -> dict[str, float]:
        return output_errors(impl, out, inp.y_exact, inp.y_quant)

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        if unquantized(impl):
            return layer_memory(case, impl)
        return bytes_memory(case, case.N * case.K + 4 * case.N)  # int8 codes + float32 scales

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Read x (in its float dtype: quantizing it per token is the implementation's work) and
        the weight once, write y once."""
        return linear_bytes(case, weight_bytes)

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        """The op's arithmetic is int8 x int8 -> int32, whatever an implementation does with it
        (the float64 reference too); the unquantized dense baseline runs at its dtype's rate."""
        return DTYPE_CEILING[case.dtype] if unquantized(impl) else INT8_CEILING
