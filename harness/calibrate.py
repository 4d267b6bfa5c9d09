"""Ceilings of the GPU a run is measured on, so rates can be read as a share of what it can do."""

from __future__ import annotations

import torch

COPY_BYTES = 1 << 30  # large enough that L2 plays no part


def _copy_ms(device: torch.device) -> float:
    import triton.testing
    src = torch.empty(COPY_BYTES // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    with torch.cuda.device(device):
        return triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")


def copy_bandwidth_gbps(device: torch.device) -> float:
    """Device-to-device copy of 1 GiB, timed like every case; GB/s counting read + write."""
    ms = _copy_ms(device)
    torch.cuda.empty_cache()  # give the 2 GiB back before the sweep
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def calibrate(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"copy_gbps": copy_bandwidth_gbps(device)}
