"""What every op contract shares: the skip signal, a case's format and element size, the memory
columns of a weight, and the base class of the ops on one weight matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from quantbench.kernels.spec import FLOAT_DTYPES, QuantSpec

from ..registry.records import Role
from . import metrics

if TYPE_CHECKING:
    from ..registry.records import Impl, OwnWeights


class Skipped(Exception):
    """An implementation that cannot run this case here (no GPU, wrong dtype, unsupported shape);
    the row says `skipped` and why."""


def spec_of(case) -> QuantSpec:
    return QuantSpec(case.bits, case.scheme, case.granularity, case.group_size)


def element_bytes(case) -> int:
    return torch.finfo(FLOAT_DTYPES[case.dtype]).bits // 8


def own_w_hat(w: torch.Tensor, own: "OwnWeights") -> torch.Tensor:
    """An own format's W_hat (Impl.own_format) on w's device, checked to be W's shape."""
    w_hat = own.w_hat.to(w.device)
    if tuple(w_hat.shape) != tuple(w.shape):
        raise ValueError(f"own_format returned W_hat of shape {list(w_hat.shape)}, the weight is {list(w.shape)}")
    return w_hat


def unquantized(impl: "Impl") -> bool:
    """The dense baseline reads the original weight: no format, no method error."""
    return impl.role is Role.BASELINE


def bytes_memory(case, nbytes: int) -> dict[str, float]:
    """The memory columns of a weight of `nbytes` bytes holding the case's N x K values."""
    return {"weight_bytes": nbytes, "bits_per_weight": 8 * nbytes / (case.N * case.K),
            "compression_vs_fp16": 2 * case.N * case.K / nbytes, "compression_vs_fp32": 4 * case.N * case.K / nbytes}


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
    square: bool = False  # whether every weight must be square (layers chained into each other)

    def flops(self, case) -> int | None:
        return None

    def flops_ceiling(self, case, impl: "Impl") -> str | None:
        """The calibration key (execution/calibration.py) of the rate this case's arithmetic runs at, for
        `pct_peak_flops`; None where the op has no FLOPs."""
        return None

    def memory(self, case, impl: "Impl") -> dict[str, float]:
        """The memory columns of the weight this implementation reads."""
        return metrics.weight_memory(spec_of(case), case.N, case.K, case.dtype)

    def bytes_moved(self, case, weight_bytes: float) -> int:
        """Read W once, write the quantized weight (`weight_bytes`) once, or the reverse."""
        return case.N * case.K * element_bytes(case) + weight_bytes
