"""Ceilings of the GPU a run is measured on, so rates can be read as a share of what it can do.

Measured once per GPU run and stored in meta.json `calibration`:

- `copy_gbps`: device-to-device copy of 1 GiB, counting read + write.
- `fp16_tflops`, `bf16_tflops`: cuBLAS dense matmul (torch.matmul) at 8192^3, 2 M N K FLOPs.
- `fp32_tflops`: the same in float32 with TF32 off (PyTorch's default, and the project's own
  float32 path, which multiplies in IEEE float32): the ceiling of float32 activations.
- `int8_tops`: torch._int_mm (cuBLASLt int8 x int8 -> int32) at 8192^3, the second operand a
  transposed row-major [N, K] matrix, the layout cuBLASLt is fastest with.

All timed with triton.testing.do_bench, L2 flushed before every sample, median (copy and cuBLAS
dispatch fast enough that do_bench's loop does not time the host, unlike the cases, which use
timing.py's engine). A rate this GPU or library cannot measure is None, with the reason under
`failed`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..results.schema import DTYPE_CEILING, INT8_CEILING

COPY_BYTES = 1 << 30  # large enough that L2 plays no part
MATMUL_SIZE = 8192  # M = N = K: large enough to reach the tensor cores' steady rate



def _median_ms(fn: Callable[[], Any], device: torch.device) -> float:
    import triton.testing
    with torch.cuda.device(device):
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def _copy_ms(device: torch.device) -> float:
    src = torch.empty(COPY_BYTES // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return _median_ms(lambda: dst.copy_(src), device)


def copy_bandwidth_gbps(device: torch.device) -> float:
    """Device-to-device copy of 1 GiB; GB/s counting read + write."""
    ms = _copy_ms(device)
    torch.cuda.empty_cache()  # give the 2 GiB back before the sweep
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int = MATMUL_SIZE) -> float:
    """Dense size^3 matmul rate in TFLOP/s (TOP/s for int8): cuBLAS for floats (TF32 off for
    float32), torch._int_mm for int8."""
    gen = torch.Generator(device=device).manual_seed(0)
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device, generator=gen)
        b_t = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device, generator=gen).t()
        fn = lambda: torch._int_mm(a, b_t)
    else:
        a = torch.randn(size, size, dtype=dtype, device=device, generator=gen)
        b = torch.randn(size, size, dtype=dtype, device=device, generator=gen)
        fn = lambda: torch.matmul(a, b)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ms = _median_ms(fn, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * size**3 / (ms * 1e-3) / 1e12


MATMUL_CEILINGS = {DTYPE_CEILING["float16"]: torch.float16, DTYPE_CEILING["bfloat16"]: torch.bfloat16,
                   DTYPE_CEILING["float32"]: torch.float32, INT8_CEILING: torch.int8}


def calibrate(device: torch.device) -> dict[str, Any]:
    """The run's measured ceilings (empty on the CPU: there is nothing to calibrate)."""
    if device.type != "cuda":
        return {}
    out: dict[str, Any] = {"copy_gbps": copy_bandwidth_gbps(device), "matmul_size": MATMUL_SIZE}
    failed = {}
    for key, dtype in MATMUL_CEILINGS.items():
        try:
            out[key] = matmul_tflops(device, dtype)
        except RuntimeError as e:  # e.g. torch._int_mm on a GPU or build without int8 cuBLASLt
            out[key] = None
            failed[key] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
        torch.cuda.empty_cache()  # the operands are gone with the call: give their memory back
    if failed:
        out["failed"] = failed
    return out


def pct_peak_flops(tflops: float | None, ceiling_key: str | None, calibration: dict[str, Any]) -> float | None:
    """A row's rate as a percentage of the calibrated ceiling named by its op (None where the op
    has no FLOPs, or the ceiling was not measured)."""
    ceiling = calibration.get(ceiling_key) if ceiling_key else None
    return 100 * tflops / ceiling if tflops and ceiling else None
