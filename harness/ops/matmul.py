"""The products with a quantized weight: one linear layer (matmul) and a chain of them (stack),
and the error columns every product shares (method, kernel, total)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import torch

from quantbench import kernels
from quantbench.kernels.spec import QuantizedTensor

from ..results.schema import DTYPE_CEILING
from . import metrics
from .base import FormatOp, bytes_memory, element_bytes, own_w_hat, spec_of, unquantized

if TYPE_CHECKING:
    from ..registry.records import Impl, OwnWeights


@dataclass(frozen=True)
class MatmulInputs:
    x: torch.Tensor
    w: torch.Tensor
    q: QuantizedTensor
    y_exact: torch.Tensor  # float64 x @ W^T, the original weights
    y_quant: torch.Tensor  # float64 x @ W_hat^T, the same quantized weights every kernel uses (own format: own_product)
    weight_error: dict[str, float]  # of W_hat against W: the same for every quantized implementation
    own: Any = None  # an implementation's own prepared weights (Impl.own_format), else None


UNQUANTIZED_WEIGHT_ERROR = {"mse": 0.0, "mae": 0.0, "max_abs_err": 0.0, "snr_db": math.inf, "rel_err": 0.0}


def product_problem(out: torch.Tensor, y_quant: torch.Tensor, k: int) -> str | None:
    """A product checked against the float64 one with the same quantized weights: the output is
    rounded once to its dtype and accumulated in float32 over the k terms of the reduction."""
    rel, _ = metrics.output_error(out, y_quant)
    bound = 2 * torch.finfo(out.dtype).eps + k * torch.finfo(torch.float32).eps
    return None if rel <= bound else f"relative error {rel:.3g} against the float64 product exceeds {bound:.3g}"


def own_product(x: torch.Tensor, w: torch.Tensor, own: "OwnWeights") -> tuple[torch.Tensor, torch.Tensor]:
    """An own format's W_hat (on the weight's device, checked to be W's shape) and the float64
    output [M, N] of its method on x: `own.product(x)` where the method quantizes the activations
    too (fp8 rowwise, LLM.int8), else x @ W_hat^T."""
    w_hat = own_w_hat(w, own)
    if own.product is None:
        return w_hat, x.double() @ w_hat.double().t()
    y = own.product(x)
    if tuple(y.shape) != (x.shape[0], w.shape[0]):
        raise ValueError(f"own_format's product returned shape {list(y.shape)}, the output is "
                         f"{[x.shape[0], w.shape[0]]}")
    if y.dtype != torch.float64:
        # the method's output in a lower precision would carry rounding into what rows are checked against
        raise TypeError(f"own_format's product must return float64 (the method's exact output), got {y.dtype}")
    return w_hat, y.to(x.device)


def output_errors(impl: "Impl", out: torch.Tensor, y_exact: torch.Tensor, y_quant: torch.Tensor) -> dict[str, float]:
    """The error columns of a product: the method's (float64 with quantized weights against float64
    with the originals; none for the unquantized dense baseline), the kernel's (its output against
    the float64 output of the same method), the total, and the seed's output metrics."""
    dense = unquantized(impl)
    method_rel, method_snr = (0.0, math.inf) if dense else metrics.output_error(y_quant, y_exact)
    kernel_rel, kernel_snr = metrics.output_error(out, y_exact if dense else y_quant)
    return {"method_rel_err": method_rel, "method_snr_db": method_snr,
            "kernel_rel_err": kernel_rel, "kernel_snr_db": kernel_snr,
            "out_rel_err": metrics.output_error(out, y_exact)[0],
            **metrics.output_difference(out, y_exact)}


def layer_memory(case, impl: "Impl") -> dict[str, float]:
    """The weight one layer reads: quantized, or the unquantized one for the dense baseline."""
    if not unquantized(impl):
        return metrics.weight_memory(spec_of(case), case.N, case.K, case.dtype)
    return bytes_memory(case, case.N * case.K * element_bytes(case))


def linear_bytes(case, weight_bytes: float) -> float:
    """y [M, N] = x [M, K] W^T: x read once in its dtype, the weight once, y written once."""
    e = element_bytes(case)
    return case.M * case.K * e + weight_bytes + case.M * case.N * e


class MatmulOp(FormatOp):
    """y [M, N] = x [M, K] @ W_hat^T: weight-only quantized matmul (WxA16), dequantization fused."""

    name = "matmul"
    axes = FormatOp.axes | {"M"}

    def prepare(self, case, source) -> MatmulInputs:
        w, x = source.weight(case), source.x(case)
        q = kernels.quantize_ref(w, spec_of(case))
        w_hat = kernels.dequantize_ref(q, torch.float32)
        x64 = x.double()
        return MatmulInputs(x, w, q, x64 @ w.double().t(), x64 @ w_hat.double().t(), metrics.weight_error(w, w_hat))

    def with_own(self, inp: MatmulInputs, own: "OwnWeights") -> MatmulInputs:
        """The inputs of an implementation with its own weight format: its prepared state as `own`,
        the float64 output of its method (own_product) and the weight error of its own W_hat,
        which its row is verified and measured against."""
        w_hat, y_quant = own_product(inp.x, inp.w, own)
        return replace(inp, own=own.state, y_quant=y_quant, weight_error=metrics.weight_error(inp.w, w_hat))

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: MatmulInputs) -> str | None:
        return product_problem(out, inp.y_quant, inp.x.shape[1])

    def error(self, impl: "Impl", out: torch.Tensor, inp: MatmulInputs) -> dict[str, float]:
        weight_error = UNQUANTIZED_WEIGHT_ERROR if unquantized(impl) else inp.weight_error
        return {**weight_error, **output_errors(impl, out, inp.y_exact, inp.y_quant)}

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        return layer_memory(case, impl)

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Read x and the weight (quantized, or dense for the unquantized baseline) once, write y once."""
        return linear_bytes(case, weight_bytes)

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        """The weight is dequantized to the activations' dtype before the multiply-adds, so the
        products run at that dtype's rate (float32: IEEE, no TF32, see execution/calibration.py)."""
        return DTYPE_CEILING[case.dtype]


@dataclass(frozen=True)
class StackInputs:
    x: torch.Tensor
    ws: list[torch.Tensor]
    qs: list[QuantizedTensor]
    y_exact: list[torch.Tensor]  # float64 output after each layer, original weights
    y_quant: list[torch.Tensor]  # float64 output after each layer, quantized weights


def chain(layer: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, weights: list) -> list[torch.Tensor]:
    outputs = []
    for w in weights:
        x = layer(x, w)
        outputs.append(x)
    return outputs


class StackOp(FormatOp):
    """`layers` square linear layers applied in sequence (the seed notebook's 5-layer experiment):
    one row per depth with the error there; the whole stack's latency on the last depth's row."""

    name = "stack"
    axes = FormatOp.axes | {"M", "layers"}
    square = True

    def prepare(self, case, source) -> StackInputs:
        """Layer 0 has the weights (and x) of the matmul op of the same shape, so the error at
        depth 1 is the single matmul's."""
        x = source.x(case)
        ws = [source.weight(case, layer) for layer in range(case.layers)]
        qs = [kernels.quantize_ref(w, spec_of(case)) for w in ws]
        y_exact = chain(lambda y, w: y @ w.double().t(), x.double(), ws)
        y_quant = chain(lambda y, q: y @ kernels.dequantize_ref(q, torch.float32).double().t(), x.double(), qs)
        return StackInputs(x, ws, qs, y_exact, y_quant)

    def verify(self, out: list[torch.Tensor], ref: list[torch.Tensor], inp: StackInputs) -> str | None:
        """Every depth by the matmul rule: its output against the float64 product of its own input
        (x at depth 1, the implementation's previous output deeper) with the layer's quantized
        weights. Each layer is then checked as one matmul, and the rounding that compounds from
        layer to layer (which the kernel_* columns report) is never held against it."""
        layer_in = inp.x
        for depth, (y, q) in enumerate(zip(out, inp.qs, strict=True), start=1):
            w_hat = kernels.dequantize_ref(q, torch.float32).to(layer_in.device).double()
            problem = product_problem(y, layer_in.double() @ w_hat.t(), inp.x.shape[1])
            if problem:
                return f"depth {depth}: {problem}"
            layer_in = y
        return None

    def error(self, impl: "Impl", out: list[torch.Tensor], inp: StackInputs) -> list[dict[str, float]]:
        return [{"depth": depth, **output_errors(impl, y, exact, quant)}
                for depth, (y, exact, quant) in enumerate(zip(out, inp.y_exact, inp.y_quant, strict=True), start=1)]

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        one = layer_memory(case, impl)
        return {**one, "weight_bytes": one["weight_bytes"] * case.layers}

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Every layer's weight (`weight_bytes` for the whole stack) once, and each layer's input read and output written."""
        return weight_bytes + case.layers * 2 * case.M * case.K * element_bytes(case)

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K * case.layers

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        return DTYPE_CEILING[case.dtype]
