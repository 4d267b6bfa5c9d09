"""An example quantbench plugin: three implementations of the `matmul` op (y = x @ W_hat^T).

quantbench calls `quantbench_impls()` and gets a list of `Impl` records. Each record's factory
receives the op's prepared inputs (for matmul: `x` [M, K], `w` [N, K] the original weights, `q` the
case's QuantizedTensor, `own` the state of an own weight format, else None) and returns a
zero-argument callable: that callable is what gets timed, so work done in the factory is setup
and work done in the callable is the kernel's.

- example_dequant_mm (CANDIDATE): dequantize the case's weights, then a plain matmul.
- example_int8_rowwise (PEER): its own weight format (symmetric int8, one scale per output row);
  its row reports this format's error and bytes, not the case's.
- example_wrong (CANDIDATE): an off-by-one along K; the harness verifies it against the float64
  product and records the row as `error`.
"""

from __future__ import annotations

import torch

from quantbench import Impl, OwnWeights, Role, kernels  # kernels.* load Triton on first use, not here


def dequant_mm(inp):
    """The case's quantized weights, dequantized in x's dtype, then x @ W_hat^T."""
    x, q = inp.x, inp.q
    return lambda: x @ kernels.dequantize_ref(q, x.dtype).t()


def int8_rowwise_format(w: torch.Tensor, case) -> OwnWeights:
    """Symmetric int8 with one float32 scale per output row: scale = absmax / 127, codes =
    round(w / scale) clamped to [-127, 127]. The harness measures this format's error from
    `w_hat` and its memory from `weight_bytes` (N*K int8 codes + N float32 scales)."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)  # an all-zero row
    codes = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    w_hat = codes.float() * scales[:, None]
    n, k = w.shape
    return OwnWeights(state=(codes, scales), w_hat=w_hat, weight_bytes=n * k + 4 * n)


def int8_rowwise_mm(inp):
    """x @ W_hat^T with the format's codes and scales (`inp.own`), dequantized in float32 and
    rounded once to x's dtype."""
    x, (codes, scales) = inp.x, inp.own
    return lambda: x @ (codes.float() * scales[:, None]).to(x.dtype).t()


def wrong_mm(inp):
    """Deliberately wrong: the last column of K is left out of the sum (an off-by-one in a loop
    bound): each output misses one of its K terms, a relative error of order 1/sqrt(K)."""
    x, q = inp.x, inp.q
    return lambda: x[:, :-1] @ kernels.dequantize_ref(q, x.dtype)[:, :-1].t()


def quantbench_impls() -> list[Impl]:
    """The records quantbench loads (through the entry point, or a config's `plugins:`)."""
    return [
        Impl(op="matmul", name="example_dequant_mm", role=Role.CANDIDATE, factory=dequant_mm,
             description="example plugin: dequantize, then matmul"),
        Impl(op="matmul", name="example_int8_rowwise", role=Role.PEER, factory=int8_rowwise_mm,
             own_format=int8_rowwise_format,
             description="example plugin: its own int8 format, one scale per row"),
        Impl(op="matmul", name="example_wrong", role=Role.CANDIDATE, factory=wrong_mm,
             description="example plugin: deliberately wrong (drops the last column of K)"),
    ]
