"""How a callable is timed. One module, so that the timing engine can be replaced in one place.

On a GPU: triton.testing.do_bench, which flushes the L2 cache before every sample and keeps every
sample (return_mode="all"); the first call, outside the samples, compiles. On the CPU (Triton's
interpreter) the wall-clock samples are kept too but marked invalid: they time numpy, not a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Measurement:
    samples_ms: tuple[float, ...]
    valid: bool  # a GPU timing; False for interpreter wall-clock times

    def stats(self) -> dict[str, Any]:
        """Median, 20th and 80th percentiles, min, mean, standard deviation (n - 1), count and
        coefficient of variation (std / mean) of the samples."""
        s = np.asarray(self.samples_ms, dtype=np.float64)
        mean = float(s.mean())
        std = float(s.std(ddof=1)) if s.size > 1 else 0.0
        return {
            "ms": float(np.median(s)),
            "ms_p20": float(np.percentile(s, 20)),
            "ms_p80": float(np.percentile(s, 80)),
            "ms_min": float(s.min()),
            "ms_mean": mean,
            "ms_std": std,
            "cv": std / mean if mean > 0 else None,
            "n_samples": int(s.size),
            "timing_valid": self.valid,
        }


def _cuda_events(fn: Callable[[], Any], warmup_ms: int, rep_ms: int) -> list[float]:
    """Samples timed with CUDA events and no cache flush (timing.flush_l2: false)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    torch.cuda.synchronize()
    per_call = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(max(1, int(warmup_ms / per_call))):
        fn()
    samples = []
    for _ in range(max(1, int(rep_ms / per_call))):
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


def measure(fn: Callable[[], Any], device: torch.device, warmup_ms: int, rep_ms: int,
            flush_l2: bool, cpu_reps: int) -> Measurement:
    if device.type == "cuda":
        with torch.cuda.device(device):
            if flush_l2:
                import triton.testing
                samples = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
            else:
                samples = _cuda_events(fn, warmup_ms, rep_ms)
        return Measurement(tuple(float(t) for t in samples), valid=True)
    samples = []
    for _ in range(cpu_reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Measurement(tuple(samples), valid=False)

