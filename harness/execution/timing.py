"""How a callable is timed. One module, so that the timing engine can be replaced in one place.

On a GPU, by default (engine do_bench): triton.testing.do_bench's method, L2 flushed and CUDA
events around every sample, warmup_ms then rep_ms of samples, all kept, with one addition: after
each flush the GPU spins for SHIELD_CYCLES before the start event. Without it a launcher whose
Python dispatch takes longer than the flush is timed with its own launch latency: on an H100 the
autotuned Triton matmul at M = 1 measured a median of 98 us (cv 0.27, minimum 28 us) under
triton.testing.do_bench inside a sweep, where cuBLAS, dispatched faster, was unaffected.
Or the adaptive engine: L2 flushed before each sample with
a buffer twice the device's L2, sampling until the median is known well enough (see Timing in
config.py). Or the CUDA-graph engine, for kernels of a few microseconds whose launch would
otherwise be timed: N repetitions of (flush, kernel) captured in one graph, less a graph of N
flushes alone. The first call, outside the samples, compiles. On the CPU (Triton's interpreter)
the wall-clock samples are kept too but marked invalid: they time numpy, not a GPU.

Rotating input buffers (several copies of the inputs, one per repetition) are not used: every
engine but `flush_l2: false` writes a buffer twice the L2 before each kernel, so no input of the
previous repetition is left in L2 whatever its size, and one set of inputs is what the providers
give (a closure over one prepared set).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch

from ..results.schema import Measurement


# GPU cycles spun between the flush and the start event (about 0.5 ms on an H100), time for the
# CPU to enqueue the timed call before the GPU reaches it
SHIELD_CYCLES = 1_000_000


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
        # the spin keeps the GPU busy while fn is enqueued: without it the start event fires on an
        # idle GPU and the sample includes the launch (5-7 us on the H200: a 101 us sleep read 107)
        torch.cuda._sleep(SHIELD_CYCLES)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


MEDIAN_SE_FACTOR = 1.2533  # sqrt(pi / 2): standard error of a median over that of a mean (normal, large n)


def median_rse_of(std: float | None, n: int | None, median: float | None) -> float:
    """Relative standard error of the median: 1.2533 std / sqrt(n) / median (large-sample,
    normal); infinite when it cannot be known (fewer than 2 samples, no positive median)."""
    if not n or n < 2 or std is None or not median or median <= 0:
        return math.inf
    return MEDIAN_SE_FACTOR * std / math.sqrt(n) / median


def median_rse(samples: list[float]) -> float:
    """median_rse_of the samples."""
    s = np.asarray(samples, dtype=np.float64)
    if s.size < 2:
        return math.inf
    return median_rse_of(float(s.std(ddof=1)), int(s.size), float(np.median(s)))


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


def l2_flush_buffer(device: torch.device) -> torch.Tensor:
    """A buffer twice the device's L2: zeroing it leaves none of a kernel's inputs in L2."""
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    return torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)


def enqueue_flush_and_spin(flush: torch.Tensor) -> None:
    """Zero the flush buffer (so no input stays in L2), then spin the GPU, without waiting: what
    precedes every timed call."""
    flush.zero_()
    torch.cuda._sleep(SHIELD_CYCLES)


def _enqueue_sample(fn: Callable[[], Any], flush: torch.Tensor, start: torch.cuda.Event,
                    end: torch.cuda.Event) -> None:
    """Enqueue one sample: flush and spin, then fn between two events. Nothing waits for the GPU here."""
    enqueue_flush_and_spin(flush)
    start.record()
    fn()
    end.record()


def _flushed_event_sample(fn: Callable[[], Any], device: torch.device) -> Callable[[], float]:
    """One sample at a time (the adaptive engine decides after each whether to go on)."""
    flush = l2_flush_buffer(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def sample() -> float:
        _enqueue_sample(fn, flush, start, end)
        end.synchronize()
        return start.elapsed_time(end)
    return sample


def graph_samples(replay_kernels: Callable[[], float], replay_flushes: Callable[[], float] | None,
                  reps: int, timing) -> list[float]:
    """Per-kernel samples (ms) from replays of two CUDA graphs, each call returning one replay's
    time: `replay_kernels` runs `reps` times (flush, kernel), `replay_flushes` `reps` flushes alone
    (None when the L2 is not flushed). Replays alternate, warmup_ms of them first; then pairs until
    rep_ms of replay time and at least min_samples. Each sample is one kernel-graph replay less
    the median flush-graph replay, over reps: the median, not the neighbouring replay, so that
    the flush's own jitter is not added to every sample."""
    def pair() -> tuple[float, float]:
        k = replay_kernels()
        return k, (replay_flushes() if replay_flushes is not None else 0.0)

    spent = 0.0
    while spent < timing.warmup_ms:
        spent += sum(pair())
    kernel_ms, flush_ms, spent = [], [], 0.0
    while len(kernel_ms) < timing.min_samples or spent < timing.rep_ms:
        k, f = pair()
        kernel_ms.append(k)
        flush_ms.append(f)
        spent += k + f
    flush_median = float(np.median(flush_ms))
    return [(k - flush_median) / reps for k in kernel_ms]


class GraphCaptureError(RuntimeError):
    """An implementation that cannot be captured in a CUDA graph (it synchronises, or copies to
    the host): the row says so; time it with engine do_bench or adaptive."""


def _cuda_graph_samples(fn: Callable[[], Any], device: torch.device, timing) -> list[float]:
    """Capture the two graphs of `graph_samples` and replay them, timed with CUDA events."""
    flush = l2_flush_buffer(device) if timing.flush_l2 else None
    reps = timing.graph_reps
    # warm up on a side stream before capture, as PyTorch asks (lazy cuBLAS workspaces and the like)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)

    def capture(with_kernel: bool) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(reps):
                if flush is not None:
                    flush.zero_()
                if with_kernel:
                    fn()
        return graph

    try:
        kernel_graph = capture(with_kernel=True)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise GraphCaptureError(f"timing.engine cuda_graph: this implementation cannot be captured in a "
                                f"CUDA graph ({first}); time it with engine do_bench or adaptive") from None
    flush_graph = capture(with_kernel=False) if flush is not None else None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def replay(graph: torch.cuda.CUDAGraph) -> Callable[[], float]:
        def timed() -> float:
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return timed

    return graph_samples(replay(kernel_graph), replay(flush_graph) if flush_graph else None, reps, timing)


def engine_note(device: torch.device, timing) -> str | None:
    """What a run should say once when the timing engine it asked for cannot run here (every
    engine but the default needs a GPU); None when it can."""
    if device.type == "cuda" or timing.engine == "do_bench":
        return None
    return (f"timing.engine {timing.engine} needs a CUDA GPU: on the CPU each case gets {timing.cpu_reps} "
            f"wall-clock samples through Triton's interpreter, marked timing_valid = False")


def estimate_call_ms(fn: Callable[[], Any], flush: torch.Tensor, calls: int = 5) -> float:
    """ms per call of fn (after a flush), from `calls` back-to-back calls between two events: what
    do_bench sizes its warmup and repetitions by."""
    first, last = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    first.record()
    for _ in range(calls):
        flush.zero_()
        fn()
    last.record()
    torch.cuda.synchronize()
    return max(first.elapsed_time(last) / calls, 1e-3)


def _shielded_samples(fn: Callable[[], Any], device: torch.device, warmup_ms: float, rep_ms: float) -> list[float]:
    """triton.testing.do_bench's loop (estimate from 5 calls, then warmup_ms of untimed calls and
    rep_ms of timed ones, all enqueued before one synchronisation) with a flush twice the L2 and
    a spin before every timed call."""
    flush = l2_flush_buffer(device)
    estimate_ms = estimate_call_ms(fn, flush)
    n_warmup = max(1, int(warmup_ms / estimate_ms))
    n_repeat = max(1, int(rep_ms / estimate_ms))
    for _ in range(n_warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    for start, end in zip(starts, ends, strict=True):
        _enqueue_sample(fn, flush, start, end)
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in zip(starts, ends, strict=True)]


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
        elif timing.engine == "cuda_graph":
            samples = _cuda_graph_samples(fn, device, timing)
        elif timing.flush_l2:
            samples = _shielded_samples(fn, device, timing.warmup_ms, timing.rep_ms)
        else:
            samples = _cuda_events(fn, timing.warmup_ms, timing.rep_ms)
    return Measurement(tuple(float(t) for t in samples), valid=True)



class GpuEventClock:
    """A timer for pytest-benchmark (`@pytest.mark.benchmark(timer=GpuEventClock())`) that reads
    GPU time, so that a round times the kernel as the default engine does, not its launch.

    pytest-benchmark calls its timer just before and just after the target, once each per round.
    The first call records a start event without waiting (behind the flush and spin the round's
    setup enqueued: see `enqueue_flush_and_spin`) and returns 0; the second records the end event,
    waits for it and returns the GPU time between the two, in seconds, so that end - start is the
    round's GPU time. Only pedantic rounds with one iteration call it that way."""

    __name__ = "GpuEventClock"  # pytest-benchmark names the timer in its JSON by __name__

    def __init__(self) -> None:
        self._start: torch.cuda.Event | None = None

    def reset(self) -> None:
        """Forget a start left by a round that raised between its two calls."""
        self._start = None

    def __call__(self) -> float:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        if self._start is None:
            self._start = event
            return 0.0
        start, self._start = self._start, None
        event.synchronize()
        return start.elapsed_time(event) / 1e3
