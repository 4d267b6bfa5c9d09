"""One case: an implementation given a workload's prepared inputs, checked against the reference,
measured, and turned into rows. Each step is one function; `measure_case` runs them in order."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Any

import torch

from ..config import RunConfig, Timing, first_line
from ..ops import Skipped, bytes_memory
from ..registry import Impl
from .calibration import pct_peak_flops
from .cases import Case
from .gpu_monitor import GpuMonitor, watched
from .row_flags import row_flags
from .host_time import host_columns
from .timing import measure


class CaseTimeout(Exception):
    """A case ran past timing.case_timeout_s."""


@contextmanager
def case_time_limit(seconds: float):
    """Raise CaseTimeout in the main thread once `seconds` have passed (checked between Python
    operations: a single long GPU call finishes first). Elsewhere than the main thread, no limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        if _importing(frame):  # raised inside an import, it would leave a module half made for every later case
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        raise CaseTimeout(f"over the per-case limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _importing(frame) -> bool:
    """Whether `frame` runs inside an import statement (importlib's frames below it)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _timeout_in(e: BaseException | None) -> CaseTimeout | None:
    """The CaseTimeout that `e` is or wraps (Triton's interpreter re-raises an exception raised in
    a kernel as InterpreterError, from the original), else None."""
    while e is not None and not isinstance(e, CaseTimeout):
        e = e.__cause__ or e.__context__
    return e


def failed_row(e: Exception, context: str = "") -> dict[str, Any]:
    """The row of a case that could not be measured: out of device memory, over its time limit, or
    any other error, with its reason. The sweep goes on."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return {"status": "oom", "message": context + first_line(e)}
    timeout = _timeout_in(e)
    if timeout is not None:
        return {"status": "timeout", "message": context + str(timeout)}
    return {"status": "error", "message": context + first_line(e)}


def first_call(fn, device: torch.device) -> tuple[Any, float]:
    """The first call, which compiles and autotunes: its output and its wall time in ms."""
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - start) * 1e3


def peak_memory(fn, device: torch.device) -> int | None:
    """Bytes: the allocator's high-water mark during one more untimed call, above what was
    allocated before it (its output and every temporary). Not the first call: Triton's autotuner
    allocates its own L2-flush buffer there, and torch.compile compiles. None on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return peak


def prepared(op, impl: Impl, case: Case, inputs: Any) -> tuple[Any, dict[str, Any]]:
    """The inputs this implementation is given and the memory columns of the weight it reads: the
    case's format, or, for an implementation with its own weight format, its own W_hat and bytes."""
    if impl.own_format is None:
        return inputs, op.memory(case, impl)
    own = impl.own_format(inputs.w, case)
    return op.with_own(inputs, own), bytes_memory(case, own.weight_bytes)


def verdict(op, impl: Impl, out: Any, ref_out: Any, ref_error: str | None, inputs: Any) -> dict[str, str]:
    """`ok`, or `error` with the mismatch: a verified implementation's output against the
    reference's (or the reason there is no reference to check against). Unverified roles (the
    reference itself, the dense baseline) are ok by definition."""
    problem = ((ref_error or shape_problem(out, ref_out) or op.verify(out, ref_out, inputs))
               if impl.role.verified else None)
    return {"status": "error", "message": problem} if problem else {"status": "ok", "message": ""}


def shape_problem(out: Any, ref_out: Any) -> str | None:
    """An output that is not shaped as the reference's (a tensor, or each of a list's): the ops'
    checks compare element by element, and broadcasting would pass [3, M, N] against [M, N]."""
    if isinstance(ref_out, (list, tuple)) and isinstance(out, (list, tuple)):
        if len(out) != len(ref_out):
            return f"returned {len(out)} outputs, expected {len(ref_out)} (the reference's)"
        return next((p for a, b in zip(out, ref_out) if (p := shape_problem(a, b))), None)
    if not isinstance(ref_out, torch.Tensor):
        return None  # a quantized weight: the op compares its parts
    if not isinstance(out, torch.Tensor):
        return f"returned a {type(out).__name__}, expected a tensor shaped {list(ref_out.shape)} (the reference's)"
    if out.shape != ref_out.shape:
        return f"output has shape {list(out.shape)}, expected {list(ref_out.shape)} (the reference's)"
    return None


def timed_columns(fn, device: torch.device, timing: Timing, monitor: GpuMonitor | None) -> dict[str, Any]:
    """The time columns: statistics of the samples (kept raw under `samples_ms`), the clocks read
    while they were taken, the flags that say when not to trust them, and the host's time per call
    beside F.linear's in the same moments (host_time.py)."""
    with watched(monitor) as watch:
        m = measure(fn, device, timing)
    stats, clocks = m.stats(), (watch.columns() if watch else {})
    flags = row_flags(stats, clocks.get("sm_clock_mhz"), monitor and monitor.max_sm_clock_mhz, timing.target_rse)
    return {**stats, **clocks, "flags": flags, **host_columns(fn, device), "samples_ms": m.samples_ms}


def rate_columns(op, case: Case, impl: Impl, ms: float, weight_bytes: float,
                 calibration: dict[str, Any]) -> dict[str, float | None]:
    """GB/s and TFLOP/s from the op's byte and FLOP counts, FLOPs per byte, and each rate as a share
    of the run's calibrated ceiling."""
    seconds = ms * 1e-3
    nbytes, flops = op.bytes_moved(case, weight_bytes), op.flops(case)
    copy_gbps = calibration.get("copy_gbps")
    gbps = nbytes / seconds / 1e9 if seconds > 0 else None
    tflops = flops / seconds / 1e12 if flops and seconds > 0 else None
    return {"gbps": gbps, "tflops": tflops, "intensity": flops / nbytes if flops else None,
            "pct_peak_bw": 100 * gbps / copy_gbps if copy_gbps and gbps else None,
            "pct_peak_flops": pct_peak_flops(tflops, op.flops_ceiling(case, impl), calibration)}


def measure_case(op, impl: Impl, case: Case, inputs: Any, ref_out: Any, ref_error: str | None, cfg: RunConfig,
                 device: torch.device, calibration: dict[str, Any],
                 monitor: GpuMonitor | None = None) -> list[dict[str, Any]]:
    """The rows of one case and implementation: one, or one per depth for a stack (the time of
    the whole stack then goes on the last depth's row)."""
    missing = impl.needs.missing(device)
    if missing:
        return [{"status": "skipped", "message": f"{impl.name} {missing}"}]
    try:
        inputs, memory = prepared(op, impl, case, inputs)
        fn = impl.factory(inputs)
    except Skipped as e:
        return [{"status": "skipped", "message": str(e)}]
    out, first_call_ms = first_call(fn, device)
    peak_mem_bytes = peak_memory(fn, device)
    # read right after the untimed calls: a launcher remembers how it launched last
    status = {**verdict(op, impl, out, ref_out, ref_error, inputs), **memory,
              "path": impl.path(inputs) if impl.path else None,
              "kernel_config": impl.kernel_config(inputs) if impl.kernel_config else None}
    # an output shaped otherwise than the reference's has no error to measure (the verdict says why)
    errors = {} if impl.role.verified and shape_problem(out, ref_out) else op.error(impl, out, inputs)
    rows = [{**status, **e} for e in (errors if isinstance(errors, list) else [errors])]
    timed = rows[-1]
    timed.update(timed_columns(fn, device, cfg.timing, monitor), first_call_ms=first_call_ms,
                 peak_mem_bytes=peak_mem_bytes)
    timed.update(rate_columns(op, case, impl, timed["ms"], memory["weight_bytes"], calibration))
    return rows
