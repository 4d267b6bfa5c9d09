"""The op contracts. Each op says which axes apply to it, how to make its inputs (the frozen
records below, handed to every implementation's factory), how to check an output against the
reference, what its rows' error and memory are, and what it moves. Which implementations exist,
and in which role, is the registry's (harness/registry).

The inputs an implementation receives, by op (all on the run's device):
- quantize: WeightInputs(w [N, K] float, spec)
- dequantize: CodeInputs(w, q: QuantizedTensor of w in the case's format)
- matmul: MatmulInputs(x [M, K], w [N, K], q, ..., own: the implementation's own prepared
  weights where it declares its own format, else None)
- stack: StackInputs(x, ws: one weight per layer, qs: their QuantizedTensors, ...)
- matmul_w8a8: W8A8Inputs(x, w, w_int8 [N, K] int8, w_scales [N] float32, ...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import torch

from quantbench import kernels
from quantbench.kernels.spec import FLOAT_DTYPES, QuantizedTensor, QuantSpec

from . import metrics
from .calibrate import DTYPE_CEILING, INT8_CEILING

if TYPE_CHECKING:
    from .registry import Impl, OwnWeights


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
    """What the ops on one weight matrix share: their axes, no FLOPs, the quantized weight's memory.

    Byte counts (`bytes_moved`) are the compulsory traffic of the op, the same for every
    implementation that reads the same weight: each input read once and each output written once
    (packed codes, scales and zeros exactly, activations, outputs), nothing for intermediates an
    implementation chooses to make (a dequantized copy, split-K partials, int8 activations): those
    show as a lower rate, which is the point of comparing implementations on one count.
    FLOPs (`flops`) count the multiply-adds of products as 2 M N K. Quantize and dequantize have
    none: their elementwise arithmetic (a few operations per weight, how many depends on the
    implementation) is far from any compute ceiling, and they are judged on bandwidth alone.
    """

    axes = frozenset({"bits", "scheme", "granularity", "group_size", "dtype", "N", "K"})
    fixed: dict[str, object] = {}  # identity values of axes an op does not take (its one format)

    def flops(self, case) -> int | None:
        return None

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        """The calibration key (calibrate.py) of the rate this case's arithmetic runs at, for
        `pct_peak_flops`; None where the op has no FLOPs."""
        return None

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        """The memory columns of the weight this implementation reads."""
        return metrics.weight_memory(_spec(case), case.N, case.K, case.dtype)

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Read W once, write the quantized weight (`weight_bytes`) once, or the reverse."""
        return case.N * case.K * _elem(case) + weight_bytes


class QuantizeOp(FormatOp):
    """W [N, K] float -> packed codes, scales, zeros."""

    name = "quantize"

    def prepare(self, case, source) -> WeightInputs:
        return WeightInputs(source.weight(case), _spec(case))

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
        return CodeInputs(w, kernels.quantize_ref(w, _spec(case)))

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: CodeInputs) -> str | None:
        msg = metrics.mismatches(out, ref, metrics.dequant_close(out, ref))
        return f"values differ from the reference beyond float rounding: {msg}" if msg else None

    def error(self, impl: "Impl", out: torch.Tensor, inp: CodeInputs) -> dict[str, float]:
        return metrics.weight_error(inp.w, out)


@dataclass(frozen=True)
class MatmulInputs:
    x: torch.Tensor
    w: torch.Tensor
    q: QuantizedTensor
    y_exact: torch.Tensor  # float64 x @ W^T, the original weights
    y_quant: torch.Tensor  # float64 x @ W_hat^T, the same quantized weights every kernel uses
    weight_error: dict[str, float]  # of W_hat against W: the same for every quantized implementation
    own: Any = None  # an implementation's own prepared weights (Impl.own_format), else None


UNQUANTIZED_WEIGHT_ERROR = {"mse": 0.0, "mae": 0.0, "max_abs_err": 0.0, "snr_db": math.inf, "rel_err": 0.0}


def _product_problem(out: torch.Tensor, y_quant: torch.Tensor) -> str | None:
    """A product checked against the float64 one with the same quantized weights: the output is
    rounded once to its dtype and accumulated in float32 over K terms."""
    rel, _ = metrics.output_error(out, y_quant)
    bound = 2 * torch.finfo(out.dtype).eps + y_quant.shape[1] * torch.finfo(torch.float32).eps
    return None if rel <= bound else f"relative error {rel:.3g} against the float64 product exceeds {bound:.3g}"


def _unquantized(impl: "Impl") -> bool:
    from .registry import Role
    return impl.role is Role.BASELINE


def _output_errors(impl: "Impl", out: torch.Tensor, y_exact: torch.Tensor, y_quant: torch.Tensor) -> dict[str, float]:
    """The error columns of a product: the method's (float64 with quantized weights against float64
    with the originals; none for the unquantized dense baseline), the kernel's (its output against
    the float64 output of the same method), the total, and the seed's output metrics."""
    unquantized = _unquantized(impl)
    method_rel, method_snr = (0.0, math.inf) if unquantized else metrics.output_error(y_quant, y_exact)
    kernel_rel, kernel_snr = metrics.output_error(out, y_exact if unquantized else y_quant)
    return {"method_rel_err": method_rel, "method_snr_db": method_snr,
            "kernel_rel_err": kernel_rel, "kernel_snr_db": kernel_snr,
            "out_rel_err": metrics.output_error(out, y_exact)[0],
            **metrics.output_difference(out, y_exact)}


def bytes_memory(case, nbytes: int) -> dict[str, float]:
    """The memory columns of a weight of `nbytes` bytes holding the case's N x K values."""
    return {"weight_bytes": nbytes, "bits_per_weight": 8 * nbytes / (case.N * case.K),
            "compression_vs_fp16": 2 * case.N * case.K / nbytes, "compression_vs_fp32": 4 * case.N * case.K / nbytes}


def _layer_memory(case, impl: "Impl") -> dict[str, float]:
    """The weight one layer reads: quantized, or the unquantized one for the dense baseline."""
    if not _unquantized(impl):
        return metrics.weight_memory(_spec(case), case.N, case.K, case.dtype)
    return bytes_memory(case, case.N * case.K * _elem(case))


def _linear_bytes(case, weight_bytes: float) -> float:
    """y [M, N] = x [M, K] W^T: x read once in its dtype, the weight once, y written once."""
    e = _elem(case)
    return case.M * case.K * e + weight_bytes + case.M * case.N * e


class MatmulOp(FormatOp):
    """y [M, N] = x [M, K] @ W_hat^T: weight-only quantized matmul (WxA16), dequantization fused."""

    name = "matmul"
    axes = FormatOp.axes | {"M"}

    def prepare(self, case, source) -> MatmulInputs:
        w, x = source.weight(case), source.x(case)
        q = kernels.quantize_ref(w, _spec(case))
        w_hat = kernels.dequantize_ref(q, torch.float32)
        x64 = x.double()
        return MatmulInputs(x, w, q, x64 @ w.double().t(), x64 @ w_hat.double().t(), metrics.weight_error(w, w_hat))

    def with_own(self, inp: MatmulInputs, own: "OwnWeights") -> MatmulInputs:
        """The inputs of an implementation with its own weight format: its prepared state as `own`,
        and the float64 product and weight error of its own W_hat, which its row is verified and
        measured against."""
        w_hat = own.w_hat.to(inp.w.device)
        if tuple(w_hat.shape) != tuple(inp.w.shape):
            raise ValueError(f"own_format returned W_hat of shape {list(w_hat.shape)}, the weight is {list(inp.w.shape)}")
        return replace(inp, own=own.state, y_quant=inp.x.double() @ w_hat.double().t(),
                       weight_error=metrics.weight_error(inp.w, w_hat))

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: MatmulInputs) -> str | None:
        return _product_problem(out, inp.y_quant)

    def error(self, impl: "Impl", out: torch.Tensor, inp: MatmulInputs) -> dict[str, float]:
        weight_error = UNQUANTIZED_WEIGHT_ERROR if _unquantized(impl) else inp.weight_error
        return {**weight_error, **_output_errors(impl, out, inp.y_exact, inp.y_quant)}

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        return _layer_memory(case, impl)

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Read x and the weight (quantized, or dense for the unquantized baseline) once, write y once."""
        return _linear_bytes(case, weight_bytes)

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        """The weight is dequantized to the activations' dtype before the multiply-adds, so the
        products run at that dtype's rate (float32: IEEE, no TF32, see calibrate.py)."""
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

    def prepare(self, case, source) -> StackInputs:
        """Layer 0 has the weights (and x) of the matmul op of the same shape, so the error at
        depth 1 is the single matmul's."""
        x = source.x(case)
        ws = [source.weight(case, layer) for layer in range(case.layers)]
        qs = [kernels.quantize_ref(w, _spec(case)) for w in ws]
        y_exact = chain(lambda y, w: y @ w.double().t(), x.double(), ws)
        y_quant = chain(lambda y, q: y @ kernels.dequantize_ref(q, torch.float32).double().t(), x.double(), qs)
        return StackInputs(x, ws, qs, y_exact, y_quant)

    def verify(self, out: list[torch.Tensor], ref: list[torch.Tensor], inp: StackInputs) -> str | None:
        """Depth 1 against the float64 product with the same quantized weights, by the matmul rule
        (deeper layers compound rounding, which the kernel_* columns report)."""
        return _product_problem(out[0], inp.y_quant[0])

    def error(self, impl: "Impl", out: list[torch.Tensor], inp: StackInputs) -> list[dict[str, float]]:
        return [{"depth": depth, **_output_errors(impl, y, exact, quant)}
                for depth, (y, exact, quant) in enumerate(zip(out, inp.y_exact, inp.y_quant, strict=True), start=1)]

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        one = _layer_memory(case, impl)
        return {**one, "weight_bytes": one["weight_bytes"] * case.layers}

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Every layer's weight (`weight_bytes` for the whole stack) once, and each layer's input read and output written."""
        return weight_bytes + case.layers * 2 * case.M * case.K * _elem(case)

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K * case.layers

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        return DTYPE_CEILING[case.dtype]


@dataclass(frozen=True)
class W8A8Inputs:
    x: torch.Tensor
    w: torch.Tensor
    w_int8: torch.Tensor
    w_scales: torch.Tensor
    y_exact: torch.Tensor  # float64 x @ W^T
    y_quant: torch.Tensor  # float64 result of the W8A8 method: quantized x and W, exact integer sums


class W8A8MatmulOp(FormatOp):
    """y [M, N] = x [M, K] @ W^T with x quantized per token on the fly and W per channel, both
    symmetric int8; int32 accumulation, scales in the epilogue."""

    name = "matmul_w8a8"
    axes = frozenset({"dtype", "M", "N", "K"})
    fixed = {"bits": 8, "scheme": "symmetric", "granularity": "channel"}

    def prepare(self, case, source) -> W8A8Inputs:
        w, x = source.weight(case), source.x(case)
        w_int8, w_scales = kernels.pack_weights(kernels.quantize_ref(w, _spec(case)))
        xq, sx = kernels.quantize_tokens_ref(x)
        y_quant = (xq.double() @ w_int8.double().t()) * sx.double()[:, None] * w_scales.double()[None, :]
        return W8A8Inputs(x, w, w_int8, w_scales, x.double() @ w.double().t(), y_quant)

    def verify(self, out: torch.Tensor, ref: torch.Tensor, inp: W8A8Inputs) -> str | None:
        """Integer sums are exact: what remains is the float32 epilogue and one rounding."""
        rel, _ = metrics.output_error(out, inp.y_quant)
        bound = 2 * torch.finfo(out.dtype).eps
        return None if rel <= bound else f"relative error {rel:.3g} against the exact W8A8 result exceeds {bound:.3g}"

    def error(self, impl: "Impl", out: torch.Tensor, inp: W8A8Inputs) -> dict[str, float]:
        return _output_errors(impl, out, inp.y_exact, inp.y_quant)

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        if _unquantized(impl):
            return _layer_memory(case, impl)
        return bytes_memory(case, case.N * case.K + 4 * case.N)  # int8 codes + float32 scales

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Read x (in its float dtype: quantizing it per token is the implementation's work) and
        the weight once, write y once."""
        return _linear_bytes(case, weight_bytes)

    def flops(self, case) -> int | None:
        return 2 * case.M * case.N * case.K

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        """The op's arithmetic is int8 x int8 -> int32, whatever an implementation does with it
        (the float64 reference too); the unquantized dense baseline runs at its dtype's rate."""
        return DTYPE_CEILING[case.dtype] if _unquantized(impl) else INT8_CEILING


OPS = {op.name: op for op in (QuantizeOp(), DequantizeOp(), MatmulOp(), StackOp(), W8A8MatmulOp())}
