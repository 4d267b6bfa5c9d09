"""What an implementation is, as data: a frozen record with its op, name, factory and role, what it
needs to run, and (optionally) its own weight format.

A factory takes the op's prepared inputs (frozen, documented in `harness.ops`: for `matmul`,
`x` [M, K], `w` [N, K], `q` the case's QuantizedTensor, and `own` where the implementation
brings its own format) and returns a zero-argument callable, which is what gets timed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

Factory = Callable[[Any], Callable[[], Any]]


class Role(str, Enum):
    """What an implementation is for, which decides how it is checked and where it is shown."""

    REFERENCE = "reference"  # one per op: what every verified output is checked against
    CANDIDATE = "candidate"  # verified; the subject of tables and plots (its speedup over the others)
    PEER = "peer"            # verified; what candidates are compared against (a library, a compiler)
    BASELINE = "baseline"    # unquantized dense (cuBLAS in the activations' dtype): not verified

    @property
    def verified(self) -> bool:
        return self in (Role.CANDIDATE, Role.PEER)


@dataclass(frozen=True, kw_only=True)
class Needs:
    """What an implementation needs to run; a missing need gives a `skipped` row naming it."""

    cuda: bool = False
    packages: tuple[str, ...] = ()  # importable module names, e.g. ("bitsandbytes",)
    min_capability: tuple[int, int] | None = None  # CUDA compute capability, e.g. (8, 0)

    def missing(self, device) -> str | None:
        """Why this cannot run on `device` (a torch.device), or None."""
        if (self.cuda or self.min_capability) and device.type != "cuda":
            return "needs a CUDA GPU"
        for package in self.packages:
            if importlib.util.find_spec(package) is None:
                return f"needs the Python package {package!r}, which is not installed"
        if self.min_capability and device.type == "cuda":
            import torch
            have = torch.cuda.get_device_capability(device)
            if have < self.min_capability:
                need = ".".join(map(str, self.min_capability))
                return f"needs compute capability {need} or newer, this GPU has {have[0]}.{have[1]}"
        return None


@dataclass(frozen=True)
class OwnWeights:
    """An implementation's own quantization of a case's weights (what `Impl.own_format` returns).

    state: whatever its factory needs (packed weights, a library's module), handed over as the
    inputs' `own`; w_hat: the weights it computes with, dequantized, float [N, K] (its error,
    method error and verification are taken from these); weight_bytes: the exact bytes it keeps
    for the weight (codes, scales, any second-level scales)."""

    state: Any
    w_hat: Any
    weight_bytes: int
    # Where the format's method is more than x @ W_hat^T (it quantizes the activations too, as
    # LLM.int8 and fp8 rowwise do): a function of x [M, K] returning the method's exact output as
    # float64 [M, N], which the row is verified and measured against. None: x @ W_hat^T.
    product: Callable[[Any], Any] | None = None
    # quantize only: a function of what the implementation's callable returns, giving its W_hat
    # (float [N, K]), which is checked against w_hat and measured; dequantize returns W_hat itself.
    decode: Callable[[Any], Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Impl:
    """One implementation of one op. `op`, `name`, `factory` and `role` are required.

    own_format: for an implementation that quantizes the weights its own way (a library's NF4,
    say), a function of the case's original weights `w` [N, K] (in the case's dtype, on the run's
    device: convert as the format needs) and the case, returning OwnWeights; its rows then report
    that format's error and bytes, never the case's. Its rows keep the case's labels (bits,
    scheme, granularity): where a case's format is not one the implementation runs, raise
    harness.ops.Skipped from own_format rather than measure the same format under another label.
    (matmul, matmul_w8a8, quantize and dequantize: registry.OWN_FORMAT_OPS.)

    path: for an implementation that picks among kernels by shape, a function of its inputs
    returning the variant a call runs ("gemv", "split-k gemm", ...): the row's `path` column, so a
    table explains a jump between two values of M.

    kernel_config: for an implementation whose kernels are autotuned or planned per shape, a
    function of its inputs returning the launch configuration its last call ran (tile, split,
    warps, stages: "BLOCK_N=64 BLOCK_K=256 ... num_warps=4 num_stages=3"), read right after the
    case's untimed calls: the row's `kernel_config` column.

    A plugin module is imported before a run decides whether Triton runs through its interpreter:
    import quantbench.kernels' functions inside the factory (`from quantbench import kernels`,
    then `kernels.dequantize_ref(...)` when called), not at the plugin's top level.
    """

    op: str
    name: str
    factory: Factory
    role: Role
    needs: Needs = field(default_factory=Needs)
    own_format: Callable[[Any, Any], OwnWeights] | None = None
    path: Callable[[Any], str] | None = None
    kernel_config: Callable[[Any], str | None] | None = None
    description: str = ""
    origin: str = "built-in"  # set when loaded: the entry point or module it came from
