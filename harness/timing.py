"""How a callable is timed. One module, so that the timing engine can be replaced in one place.

On a GPU, by default: triton.testing.do_bench, which flushes the L2 cache before every sample and
keeps every sample (return_mode="all"). Or the adaptive engine: L2 flushed before each sample with
a buffer twice the device's L2, sampling until the median is known well enough (see Timing in
config.py). The first call, outside the samples, compiles. On the CPU (Triton's interpreter) the
wall-clock samples are kept too but marked invalid: they time numpy, not a GPU.
"""

from __future__ import annotations

import math
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


def median_rse(samples: list[float]) -> float:
    """Relative standard error of the median: 1.2533 s / sqrt(n) / median (large-sample, normal)."""
    s = np.asarray(samples, dtype=np.float64)
    if s.size < 2:
        return math.inf
    return 1.2533 * float(s.std(ddof=1)) / math.sqrt(s.size) / float(np.median(s))


def enough(samples: list[float], elapsed_ms: float, timing) -> bool:
    """The adaptive stopping rule: past max_time_ms always; otherwise once there are min_samples
    samples, min_time_ms has passed, and the median's relative standard error is on target."""
    if elapsed_ms >= timing.max_time_ms:
        return True
    return (len(samples) >= timing.min_samples and elapsed_ms >= timing.min_time_ms
            and median_rse(samples) <= timing.target_rse)


def adaptive_samples(sample: Callable[[], float], clock_ms: Callable[[], float], timing) -> list[float]:
    """Take samples (each a time in ms from `sample`) until `enough`; `clock_ms` is wall time."""
    start = clock_ms()
    samples: list[float] = []
    while not enough(samples, clock_ms() - start, timing):
        samples.append(sample())
    return samples


def _flushed_event_sample(fn: Callable[[], Any], device: torch.device) -> Callable[[], float]:
    """One sample: zero a buffer twice the L2 (so no input stays cached), then time fn alone."""
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    flush = torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def sample() -> float:
        flush.zero_()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    return sample


def measure(fn: Callable[[], Any], device: torch.device, timing) -> Measurement:
    """Samples of fn (already called once) under the config's `timing:` block."""
    if device.type != "cuda":
        samples = []
        for _ in range(timing.cpu_reps):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return Measurement(tuple(samples), valid=False)
    with torch.cuda.device(device):
        if timing.engine == "adaptive":
            sample = _flushed_event_sample(fn, device)
            warm_until = time.perf_counter() + timing.warmup_ms / 1e3
            while time.perf_counter() < warm_until:
                sample()
            samples = adaptive_samples(sample, lambda: time.perf_counter() * 1e3, timing)
        elif timing.flush_l2:
            import triton.testing
            samples = triton.testing.do_bench(fn, warmup=timing.warmup_ms, rep=timing.rep_ms, return_mode="all")
        else:
            samples = _cuda_events(fn, timing.warmup_ms, timing.rep_ms)
    return Measurement(tuple(float(t) for t in samples), valid=True)

