"""How the autotuners time a candidate config: L2 flushed, the GPU kept busy while the call is
launched, CUDA events around the kernel alone.

``triton.testing.do_bench`` (the autotuner's default) records its start event right after the L2
flush is enqueued; when the launch takes the host longer than the flush takes the GPU (Triton's
launch path costs 40-150 us of CPU time, a 256 MB flush ~60 us of GPU time), the GPU idles inside
the timed span, and a 30 us kernel reads 60-120 us. Measured on an H200 (kernels/NOTES.md): the
GEMV's and the split-K GEMM's picks were then noise, some 2-3x slower than the best config. Here
a spin on the GPU between the flush and the start event covers the launch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

FLUSH_BYTES = 256 << 20  # larger than any GPU's L2 so far (H200: 60 MB)
SPIN_CYCLES = 1 << 20  # ~0.5 ms at 2 GHz, several times a launch's host time
REPS = 25

_flush_buffers: dict[torch.device, torch.Tensor] = {}


def _flush_buffer() -> torch.Tensor:
    device = torch.device("cuda", torch.cuda.current_device())
    if device not in _flush_buffers:
        _flush_buffers[device] = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    return _flush_buffers[device]


def tuning_bench(fn: Callable[[], Any], quantiles: tuple[float, ...] = (0.5, 0.2, 0.8), reps: int = REPS) -> list[float]:
    """Milliseconds per call of fn at `quantiles` over `reps` samples (the autotuner's do_bench
    contract: it ranks configs by the returned list, median first)."""
    fn()  # compiles; errors (out of resources) reach the autotuner, which skips the config
    torch.cuda.synchronize()
    flush = _flush_buffer()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        flush.zero_()
        torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return [times[min(len(times) - 1, int(q * len(times)))] for q in quantiles]
