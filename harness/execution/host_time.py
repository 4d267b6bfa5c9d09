"""What one call costs the host (CPU), and what F.linear costs it in the same moments.

`host_us`: the CPU time of one call while the GPU is busy, so that the call only checks its
inputs and enqueues its work: what a caller pays on the CPU for each eager call in a loop (the
GPU time is the samples', timing.py). Calls are timed back to back in batches behind one GPU spin
long enough for the slowest launcher's batch: a call timed alone after a synchronize reads 2-5x
more, and varies as much, on a CPU that has just been waiting.

`host_linear_us`: the same for a fixed float16 F.linear call (results.schema.HOST_ANCHOR_SHAPE),
its batches alternating with the row's own. A host's speed moves under a row: on the H200's host F.linear
read 14-42 us between rounds and runs, and one run's dequantize rows, one code path,
17-37 us (kernels/NOTES.md). Two rows' `host_us` measured seconds apart carry that; each row's
host_us / host_linear_us was measured in the same moments and does not. F.linear is the yardstick
because a launcher's target is to cost the host no more than F.linear; a matmul run's dense
baseline rows (F.linear at the case's own shape) show how far its cost moves with the shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..results import HOST_ANCHOR_SHAPE

# GPU cycles spun ahead of each round (~16 ms on an H200): the host's batches of both calls fit
# inside it, so the GPU never waits and every call only enqueues
HOST_SPIN_CYCLES = 32 * 1_000_000
HOST_BATCH = 20
HOST_ROUNDS = 6  # even: each call's batch comes first in half of them


@dataclass(frozen=True)
class HostTime:
    us: float  # the call's host time per call, median over the rounds
    linear_us: float  # the anchor's, in the same rounds


def alternating_batch_medians(calls: Sequence[Callable[[], Any]], rounds: int, batch: int,
                              before: Callable[[], Any], after: Callable[[], Any],
                              clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """For each of `calls`, seconds per call: the median over `rounds` of `batch` calls timed back
    to back. A round runs `before()`, one batch of every call, then `after()`; every other round
    takes the calls in reverse order, so that none is always the first after `before`."""
    per_call: list[list[float]] = [[] for _ in calls]
    for r in range(rounds):
        before()
        order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            fn = calls[i]
            start = clock()
            for _ in range(batch):
                fn()
            per_call[i].append((clock() - start) / batch)
        after()
    return [float(np.median(times)) for times in per_call]


_anchors: dict[torch.device, Callable[[], Any]] = {}


def linear_anchor(device: torch.device) -> Callable[[], Any]:
    """The F.linear call host_linear_us times, its operands made once per device."""
    anchor = _anchors.get(device)
    if anchor is None:
        m, n, k = HOST_ANCHOR_SHAPE
        x = torch.randn(m, k, dtype=torch.float16, device=device)
        w = torch.randn(n, k, dtype=torch.float16, device=device)
        anchor = _anchors[device] = lambda: F.linear(x, w)
    return anchor


def host_time(fn: Callable[[], Any], device: torch.device) -> HostTime | None:
    """fn's host time per call and the anchor's, timed in alternating batches (above). None off a
    GPU, where the interpreter's time is not a launcher's cost."""
    if device.type != "cuda":
        return None
    anchor = linear_anchor(device)
    anchor()  # cuBLAS's handle and workspace, made on a first call, are not a call's cost
    us, linear_us = alternating_batch_medians(
        [fn, anchor], HOST_ROUNDS, HOST_BATCH, before=lambda: torch.cuda._sleep(HOST_SPIN_CYCLES),
        after=lambda: torch.cuda.synchronize(device))
    return HostTime(us * 1e6, linear_us * 1e6)


def host_columns(fn: Callable[[], Any], device: torch.device) -> dict[str, float | None]:
    """host_us and host_linear_us of a row (none off a GPU)."""
    measured = host_time(fn, device)
    if measured is None:
        return {"host_us": None, "host_linear_us": None}
    return {"host_us": measured.us, "host_linear_us": measured.linear_us}
