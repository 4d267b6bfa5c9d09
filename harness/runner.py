"""Run a sweep: for every workload, make inputs once, compute the reference once, then check,
measure and record each implementation. A failing case is recorded with its reason and the sweep
goes on."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .calibrate import calibrate, pct_peak_flops
from .cases import Case, expand
from .config import ConfigError, RunConfig, first_line
from .datasheets import datasheet_meta
from .env import collect_env, gpu_name
from .flags import row_flags
from .gpu_state import GpuMonitor, open_monitor, watched
from .inputs import InputSource
from .ops import OPS, Skipped, bytes_memory
from .registry import Impl, load_registry
from .results import SCHEMA_VERSION, RunWriter, utc_now
from .summary import summary_markdown
from .timing import engine_note, measure


def resolve_device(requested: str) -> torch.device:
    """'auto' is the first GPU if there is one, else the CPU (through Triton's interpreter)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {requested!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested!r} was asked for but no CUDA GPU is available "
                              f"(use 'auto' or 'cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {requested!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {requested!r}")
    return device


def use_interpreter_on_cpu(device: torch.device) -> None:
    """Triton reads TRITON_INTERPRET when a kernel is defined, so it must be set before the kernel
    modules are imported."""
    if device.type != "cpu" or os.environ.get("TRITON_INTERPRET") == "1":
        return
    if "quantbench.kernels.quantization" in sys.modules:
        raise RuntimeError("the Triton kernels were already loaded for the GPU; set TRITON_INTERPRET=1 "
                           "before importing quantbench.kernels to run them on the CPU")
    os.environ["TRITON_INTERPRET"] = "1"


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
        raise CaseTimeout(f"over the per-case limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _failed(e: Exception, context: str = "") -> dict[str, Any]:
    """The row of a case that could not be measured: out of device memory, over its time limit, or
    any other error, with its reason. The sweep goes on."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return {"status": "oom", "message": context + first_line(e)}
    if isinstance(e, CaseTimeout):
        return {"status": "timeout", "message": context + str(e)}
    return {"status": "error", "message": context + first_line(e)}


def _first_call(fn, device: torch.device) -> tuple[Any, float]:
    """The first call, which compiles and autotunes: its output and its wall time in ms."""
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - start) * 1e3


def _peak_memory(fn, device: torch.device) -> int | None:
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


def _prepared(op, impl: Impl, case: Case, inputs: Any) -> tuple[Any, dict[str, Any]]:
    """The inputs this implementation is given and the memory columns of the weight it reads: the
    case's format, or, for an implementation with its own weight format, its own W_hat and bytes."""
    if impl.own_format is None:
        return inputs, op.memory(case, impl)
    own = impl.own_format(inputs.w, case)
    return op.with_own(inputs, own), bytes_memory(case, own.weight_bytes)


def _measure_rows(op, impl: Impl, case: Case, inputs: Any, ref_out: Any, ref_error: str | None, cfg: RunConfig,
                  device: torch.device, calibration: dict[str, Any],
                  monitor: GpuMonitor | None = None) -> list[dict[str, Any]]:
    """The rows of one case and implementation: one, or one per depth for a stack (the time of
    the whole stack then goes on the last depth's row)."""
    missing = impl.needs.missing(device)
    if missing:
        return [{"status": "skipped", "message": f"{impl.name} {missing}"}]
    try:
        inputs, memory = _prepared(op, impl, case, inputs)
        fn = impl.factory(inputs)
    except Skipped as e:
        return [{"status": "skipped", "message": str(e)}]
    out, first_call_ms = _first_call(fn, device)
    peak_mem_bytes = _peak_memory(fn, device)
    status = {"status": "ok", "message": "", **memory}
    if impl.role.verified:
        problem = ref_error or op.verify(out, ref_out, inputs)
        if problem:
            status = {**status, "status": "error", "message": problem}
    errors = op.error(impl, out, inputs)
    rows = [{**status, **e} for e in (errors if isinstance(errors, list) else [errors])]
    timed = rows[-1]
    with watched(monitor) as watch:
        m = measure(fn, device, cfg.timing)
    stats, clocks = m.stats(), (watch.columns() if watch else {})
    timed.update(stats, **clocks, first_call_ms=first_call_ms, peak_mem_bytes=peak_mem_bytes,
                 samples_ms=m.samples_ms)
    timed["flags"] = row_flags(stats, clocks.get("sm_clock_mhz"), monitor and monitor.max_sm_clock_mhz,
                               cfg.timing.target_rse)
    seconds = timed["ms"] * 1e-3
    nbytes, flops = op.bytes_moved(case, memory["weight_bytes"]), op.flops(case)
    copy_gbps = calibration.get("copy_gbps")
    timed["gbps"] = nbytes / seconds / 1e9 if seconds > 0 else None
    timed["tflops"] = flops / seconds / 1e12 if flops and seconds > 0 else None
    timed["intensity"] = flops / nbytes if flops else None
    timed["pct_peak_bw"] = 100 * timed["gbps"] / copy_gbps if copy_gbps and timed["gbps"] else None
    timed["pct_peak_flops"] = pct_peak_flops(timed["tflops"], op.flops_ceiling(case, impl), calibration)
    return rows


class StopAfterCase:
    """Ctrl-C (SIGINT) asks the sweep to stop after the case in flight; a second Ctrl-C interrupts
    at once. What was measured is written either way."""

    def __init__(self):
        self.requested = False

    def __enter__(self) -> "StopAfterCase":
        self._previous = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this case (Ctrl-C again to stop now)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Key paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    return [] if a == b else [path or "(config)"]


def open_writer(cfg: RunConfig, out_root: str | Path, resume: str | Path | None, name: str,
                meta: dict[str, Any]) -> RunWriter:
    """A new run folder, or the folder of a run to resume, which must have been made with this
    config (a changed config would mix two sweeps in one table)."""
    if resume is None:
        return RunWriter.create(out_root, name, meta)
    meta_file = Path(resume) / "meta.json"
    if not meta_file.exists():
        raise ConfigError(f"--resume: {resume} is not a run folder (no meta.json)")
    recorded = json.loads(meta_file.read_text()).get("config")
    changed = _differences(recorded, cfg.model_dump(mode="json"))
    if changed:
        raise ConfigError(f"--resume: {resume} was run with a different config; changed: {', '.join(changed)}")
    return RunWriter.resume(resume)


def _impls_meta(registry, cases: list[Case]) -> list[dict[str, str]]:
    """The implementations a sweep runs: op, name, role and where each came from."""
    used = dict.fromkeys((c.op, c.impl) for c in cases)
    return [{"op": i.op, "name": i.name, "role": i.role.value, "origin": i.origin}
            for i in registry.impls if (i.op, i.name) in used]


def shard_of(cases: list[Case], index: int, count: int) -> list[Case]:
    """Shard `index` (1-based) of `count`: every count-th workload, all implementations of a
    workload in one shard (so its inputs and reference are made once). Deterministic: the same
    config always splits the same way, and the shards together are the whole sweep."""
    if not 1 <= index <= count:
        raise ConfigError(f"--shard: expected I/N with 1 <= I <= N, got {index}/{count}")
    workloads = list(dict.fromkeys(c.workload for c in cases))
    mine = set(workloads[index - 1::count])
    return [c for c in cases if c.workload in mine]


def run_sweep(cfg: RunConfig, out_root: str | Path = "results", device: str | None = None,
              show_progress: bool = True, resume: str | Path | None = None,
              shard: tuple[int, int] | None = None) -> RunWriter:
    """Run every case of `cfg` (or of one shard of it), writing into a new folder under
    `out_root` (or continuing the run folder `resume`, skipping its finished cases); returns the
    writer (its .path is the run folder, its .rows the rows)."""
    dev = resolve_device(device or cfg.device)
    use_interpreter_on_cpu(dev)
    registry = load_registry(cfg.plugins)
    cases = expand(cfg, registry)
    if shard is not None:
        cases = shard_of(cases, *shard)
    monitor, why_no_monitor = open_monitor(dev)
    env = collect_env(dev, monitor, why_no_monitor)
    note = engine_note(dev, cfg.timing)
    if note:
        print(f"note: {note}", file=sys.stderr)
    name = cfg.name if shard is None else f"{cfg.name}-shard{shard[0]}of{shard[1]}"
    writer = open_writer(cfg, out_root, resume, name, {"config": cfg.model_dump(mode="json"), "env": env,
                                                       "calibration": calibrate(dev),
                                                       "datasheet": datasheet_meta(env["gpu"]),
                                                       "timing_note": note, "cases": len(cases),
                                                       "impls": _impls_meta(registry, cases),
                                                       "shard": list(shard) if shard else None})
    common = {"run_id": writer.run_id, "device": str(dev), "gpu": gpu_name(dev),
              "schema_version": SCHEMA_VERSION, "torch_version": env["torch"], "triton_version": env["triton"]}
    source = InputSource(cfg.weights, cfg.seed, str(dev))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with StopAfterCase() as stop, Progress(*columns, disable=not show_progress, transient=True) as progress:
        task = progress.add_task(cfg.name, total=len(cases), completed=len(writer.done))
        for workload, group in groupby(cases, key=lambda c: c.workload):
            todo = [case for case in group if case.key() not in writer.done]
            if not todo or stop.requested:
                continue
            op, reference = OPS[workload.op], registry.reference(workload.op)
            progress.update(task, description=f"{workload.op} {workload.bits}b {workload.granularity} "
                                              f"{workload.N}x{workload.K}")
            inputs = ref_out = setup_failure = ref_error = None
            try:
                with case_time_limit(cfg.timing.case_timeout_s):
                    inputs = op.prepare(workload, source)
                    ref_out = reference.factory(inputs)()
            except Exception as e:  # recorded on the rows of this workload; the sweep goes on
                setup_failure = _failed(e, "could not prepare inputs or the reference: ")
                ref_error = setup_failure["message"]
            for case in todo:
                if stop.requested:
                    break
                impl = registry.get(case.op, case.impl)
                base = {**case.as_dict(), **common, "role": impl.role.value, "utc": utc_now()}
                if setup_failure and (inputs is None or impl is reference):
                    rows = [setup_failure]
                else:
                    try:
                        with case_time_limit(cfg.timing.case_timeout_s):
                            rows = _measure_rows(op, impl, case, inputs, ref_out, ref_error, cfg, dev,
                                                 writer.meta["calibration"], monitor)
                    except Exception as e:  # one failing case is recorded and the sweep goes on
                        rows = [_failed(e)]
                samples = [row.pop("samples_ms", ()) for row in rows]
                # a skipped or failed row still says what the case's weight costs, unless the
                # implementation brings its own format (then only its own bytes are ever reported)
                memory = op.memory(case, impl) if impl.own_format is None else {}
                writer.append_case(case.key(), [{**base, **memory, **row} for row in rows], samples)
                progress.advance(task)
    gpu_state_end = monitor.state() if monitor else None
    if monitor:
        monitor.close()
    writer.finish(summary_markdown, stopped_early=stop.requested, gpu_state_end=gpu_state_end)
    return writer
