"""Ceilings of the GPU a run is measured on, so rates can be read as a share of what it can do.

Measured once per GPU run and stored in meta.json `calibration`:

- `copy_gbps`: device-to-device copy of 1 GiB, counting read + write.
- `fp16_tflops`, `bf16_tflops`: cuBLAS dense matmul (torch.matmul), 2 M N K FLOPs, the best
  rate over MATMUL_SHAPES (`matmul_shapes`; `matmul_best_shape` names the shape that gave it).
- `fp32_tflops`: the same in float32 with TF32 off (PyTorch's default, and the project's own
  float32 path, which multiplies in IEEE float32): the ceiling of float32 activations.
- `int8_tops`: torch._int_mm (cuBLASLt int8 x int8 -> int32), the second operand a transposed
  row-major [N, K] matrix, the layout cuBLASLt is fastest with.

All timed with triton.testing.do_bench, L2 flushed before every sample (copy and cuBLAS dispatch
fast enough that do_bench's loop does not time the host, unlike the cases, which use timing.py's
engine): the copy's median, the matmuls' fastest sample. A ceiling must sit above what the sweep
itself reaches, and one 8192^3 median did not: on an H200 it read 641 TFLOP/s where the sweep's
cuBLAS rows reached 769 at M = 4096 (a sustained 1.7 ms product runs at lower clocks than the
sweep's single calls), so every "% of roofline" read ~16% high. Several shapes and the best
sample make it a ceiling; the roofline still raises its line to any faster row and says so
(reporting/speed_plots.roofline). A rate this GPU or library cannot measure is None, with the
reason under `failed`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..results.schema import DTYPE_CEILING, INT8_CEILING

COPY_BYTES = 1 << 30  # large enough that L2 plays no part
# (M, N, K): the sweeps' largest products, and a square one; large enough to reach the tensor
# cores' steady rate, short enough (0.2-1.7 ms on an H200) not to heat the GPU into lower clocks
MATMUL_SHAPES = ((2048, 8192, 8192), (4096, 8192, 8192), (8192, 8192, 8192))



def _bench_ms(fn: Callable[[], Any], device: torch.device, return_mode: str = "median") -> float:
    import triton.testing
    with torch.cuda.device(device):
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode=return_mode)


def _copy_ms(device: torch.device) -> float:
    src = torch.empty(COPY_BYTES // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return _bench_ms(lambda: dst.copy_(src), device)


def copy_bandwidth_gbps(device: torch.device) -> float:
    """Device-to-device copy of 1 GiB; GB/s counting read + write."""
    ms = _copy_ms(device)
    torch.cuda.empty_cache()  # give the 2 GiB back before the sweep
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def matmul_tflops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
    """Dense [M, K] x [K, N] matmul rate in TFLOP/s (TOP/s for int8) from its fastest sample:
    cuBLAS for floats (TF32 off for float32), torch._int_mm for int8."""
    m, n, k = shape
    gen = torch.Generator(device=device).manual_seed(0)
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=device, generator=gen)
        b_t = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=device, generator=gen).t()
        fn = lambda: torch._int_mm(a, b_t)
    else:
        a = torch.randn(m, k, dtype=dtype, device=device, generator=gen)
        b = torch.randn(k, n, dtype=dtype, device=device, generator=gen)
        fn = lambda: torch.matmul(a, b)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ms = _bench_ms(fn, device, "min")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * m * n * k / (ms * 1e-3) / 1e12


def best_matmul_tflops(device: torch.device, dtype: torch.dtype,
                       shapes: tuple[tuple[int, int, int], ...] = MATMUL_SHAPES) -> tuple[float, tuple[int, int, int]]:
    """The best rate over `shapes`, and the shape that gave it."""
    rates = []
    for shape in shapes:
        rates.append((matmul_tflops(device, dtype, shape), shape))
        torch.cuda.empty_cache()  # the operands are gone with the call: give their memory back
    return max(rates)


MATMUL_CEILINGS = {DTYPE_CEILING["float16"]: torch.float16, DTYPE_CEILING["bfloat16"]: torch.bfloat16,
                   DTYPE_CEILING["float32"]: torch.float32, INT8_CEILING: torch.int8}


def calibrate(device: torch.device) -> dict[str, Any]:
    """The run's measured ceilings (empty on the CPU: there is nothing to calibrate)."""
    if device.type != "cuda":
        return {}
    out: dict[str, Any] = {"copy_gbps": copy_bandwidth_gbps(device),
                           "matmul_shapes": [list(s) for s in MATMUL_SHAPES], "matmul_best_shape": {}}
    failed = {}
    for key, dtype in MATMUL_CEILINGS.items():
        try:
            out[key], shape = best_matmul_tflops(device, dtype)
            out["matmul_best_shape"][key] = list(shape)
        except RuntimeError as e:  # e.g. torch._int_mm on a GPU or build without int8 cuBLASLt
            out[key] = None
            failed[key] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            torch.cuda.empty_cache()
    if failed:
        out["failed"] = failed
    return out


def pct_peak_flops(tflops: float | None, ceiling_key: str | None, calibration: dict[str, Any]) -> float | None:
    """A row's rate as a percentage of the calibrated ceiling named by its op (None where the op
    has no FLOPs, or the ceiling was not measured)."""
    ceiling = calibration.get(ceiling_key) if ceiling_key else None
    return 100 * tflops / ceiling if tflops and ceiling else None
