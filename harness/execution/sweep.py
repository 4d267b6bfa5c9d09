"""Run a sweep: for every workload, make inputs once, compute the reference once, then check,
measure and record each implementation (case.py). A failing case is recorded with its reason and
the sweep goes on; what was measured is on disk before the next case starts."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..analysis.tables import summary_markdown
from ..config import ConfigError, RunConfig
from ..ops import OPS
from ..ops.inputs import InputSource
from ..registry import Impl, Registry, load_registry
from ..results import SCHEMA_VERSION, RunWriter, utc_now
from ..results.storage import read_meta
from .calibration import calibrate
from .case import case_time_limit, failed_row, measure_case
from .cases import Case, expand
from .datasheets import datasheet_meta
from .device import resolve_device, use_interpreter_on_cpu
from .environment import collect_env, gpu_name
from .gpu_monitor import GpuMonitor, open_monitor
from .timing import engine_note


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
    config, schema, shard and GPU model (anything else would mix two sweeps, or two machines, in
    one table)."""
    if resume is None:
        return RunWriter.create(out_root, name, meta)
    if not (Path(resume) / "meta.json").exists():
        raise ConfigError(f"--resume: {resume} is not a run folder (no meta.json)")
    recorded = read_meta(resume)
    changed = _differences(recorded.get("config"), cfg.model_dump(mode="json"))
    if changed:
        raise ConfigError(f"--resume: {resume} was run with a different config; changed: {', '.join(changed)}")
    for what, then, now in (("schema version", recorded.get("schema_version"), SCHEMA_VERSION),
                            ("shard", recorded.get("shard"), meta.get("shard")),
                            ("GPU", (recorded.get("env") or {}).get("gpu"), meta["env"].get("gpu"))):
        if then != now:
            raise ConfigError(f"--resume: {resume} was run with {what} {then!r}, this run would add rows with "
                              f"{now!r}: one run folder holds one {what}")
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


@dataclass(frozen=True)
class PreparedWorkload:
    """What every implementation of one workload shares: its inputs and the reference's output, or
    why they could not be made (then `failure` is the row each of its cases records)."""

    inputs: Any = None
    ref_out: Any = None
    failure: dict[str, Any] | None = None


def prepare_workload(op, reference: Impl, workload: Case, source: InputSource, timeout_s: float) -> PreparedWorkload:
    inputs = None
    try:
        with case_time_limit(timeout_s):
            inputs = op.prepare(workload, source)
            return PreparedWorkload(inputs, reference.factory(inputs)())
    except (Exception, SystemExit) as e:  # recorded on the rows of this workload; the sweep goes on
        return PreparedWorkload(inputs, None, failed_row(e, "could not prepare inputs or the reference: "))


def case_rows(op, impl: Impl, reference: Impl, case: Case, prepared: PreparedWorkload, cfg: RunConfig,
              device: torch.device, calibration: dict[str, Any], monitor: GpuMonitor | None) -> list[dict[str, Any]]:
    """The rows of one case; an implementation with inputs but no reference to check against is
    still measured, and its rows say why it could not be verified."""
    failure = prepared.failure
    if failure and (prepared.inputs is None or impl is reference):
        return [failure]
    try:
        with case_time_limit(cfg.timing.case_timeout_s):
            return measure_case(op, impl, case, prepared.inputs, prepared.ref_out,
                                failure and failure["message"], cfg, device, calibration, monitor)
    except (Exception, SystemExit) as e:  # one failing case (a plugin's sys.exit too) is recorded; the sweep goes on
        return [failed_row(e)]


def device_columns(dev: torch.device, env: dict[str, Any]) -> dict[str, Any]:
    """The columns that say where a row was measured: device, GPU model, host and GPU UUID."""
    return {"device": str(dev), "gpu": gpu_name(dev), "host": env["hostname"], "gpu_uuid": env.get("gpu_uuid"),
            "schema_version": SCHEMA_VERSION, "torch_version": env["torch"], "triton_version": env["triton"]}


def run_meta(cfg: RunConfig, registry: Registry, cases: list[Case], env: dict[str, Any],
             calibration: dict[str, Any], note: str | None, shard: tuple[int, int] | None) -> dict[str, Any]:
    """meta.json of a new run: config, environment, calibration and what will run."""
    return {"config": cfg.model_dump(mode="json"), "env": env, "calibration": calibration,
            "datasheet": datasheet_meta(env["gpu"]), "timing_note": note, "cases": len(cases),
            "impls": _impls_meta(registry, cases), "shard": list(shard) if shard else None}


def _open_run(cfg: RunConfig, registry: Registry, cases: list[Case], dev: torch.device, out_root: str | Path,
              resume: str | Path | None, shard: tuple[int, int] | None,
              monitor: GpuMonitor | None, why_no_monitor: str | None) -> tuple[RunWriter, dict[str, Any]]:
    """The run folder (new or resumed) with its meta.json, and the columns every row shares."""
    env = collect_env(dev, monitor, why_no_monitor)
    note = engine_note(dev, cfg.timing)
    if note:
        print(f"note: {note}", file=sys.stderr)
    name = cfg.name if shard is None else f"{cfg.name}-shard{shard[0]}of{shard[1]}"
    writer = open_writer(cfg, out_root, resume, name, run_meta(cfg, registry, cases, env, calibrate(dev), note, shard))
    return writer, {"run_id": writer.run_id, **device_columns(dev, env)}


@dataclass(frozen=True)
class Bench:
    """What measuring a case needs on one device: the run's config and implementations, the
    device, its calibration and NVML monitor, and where inputs come from."""

    cfg: RunConfig
    registry: Registry
    device: torch.device
    calibration: dict[str, Any]
    monitor: GpuMonitor | None
    source: InputSource


def measure_workload(bench: Bench, todo: list[Case], common: dict[str, Any],
                     stop: StopAfterCase | None = None) -> Iterator[tuple[Case, list[dict[str, Any]], list[tuple]]]:
    """Measure the cases `todo` of one workload (inputs and reference made once), yielding each
    case with its rows (the `common` columns included) and each row's raw samples as it finishes.
    Stops early, between cases, when `stop` asks."""
    workload = todo[0].workload
    op, reference = OPS[workload.op], bench.registry.reference(workload.op)
    prepared = prepare_workload(op, reference, workload, bench.source, bench.cfg.timing.case_timeout_s)
    for case in todo:
        if stop is not None and stop.requested:
            return
        impl = bench.registry.get(case.op, case.impl)
        base = {**case.as_dict(), **common, "role": impl.role.value, "utc": utc_now()}
        rows = case_rows(op, impl, reference, case, prepared, bench.cfg, bench.device, bench.calibration, bench.monitor)
        samples = [row.pop("samples_ms", ()) for row in rows]
        # a skipped or failed row still says what the case's weight costs, unless the
        # implementation brings its own format (then only its own bytes are ever reported)
        memory = op.memory(case, impl) if impl.own_format is None else {}
        yield case, [{**base, **memory, **row} for row in rows], samples


def workloads_todo(cases: list[Case], done: set[str]) -> list[list[Case]]:
    """The sweep's workloads in order, each as its cases not yet measured (finished ones dropped)."""
    groups = ([case for case in group if case.key() not in done] for _, group in groupby(cases, key=lambda c: c.workload))
    return [todo for todo in groups if todo]


def workload_label(case: Case) -> str:
    return f"{case.op} {case.bits}b {case.granularity} {case.N}x{case.K}"


PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


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
    writer, common = _open_run(cfg, registry, cases, dev, out_root, resume, shard, monitor, why_no_monitor)
    if resume is not None and writer.done >= {case.key() for case in cases}:
        print(f"note: every case of {writer.path} was already measured; its tables are written again", file=sys.stderr)
    bench = Bench(cfg, registry, dev, writer.meta["calibration"], monitor, InputSource(cfg.weights, cfg.seed, str(dev)))
    with StopAfterCase() as stop, Progress(*PROGRESS_COLUMNS, disable=not show_progress, transient=True) as progress:
        task = progress.add_task(cfg.name, total=len(cases), completed=len(writer.done))
        for todo in workloads_todo(cases, writer.done):
            if stop.requested:
                break
            progress.update(task, description=workload_label(todo[0]))
            for case, rows, samples in measure_workload(bench, todo, common, stop):
                writer.append_case(case.key(), rows, samples)
                progress.advance(task)
    gpu_state_end = monitor.state() if monitor else None
    if monitor:
        monitor.close()
    writer.finish(summary_markdown, stopped_early=stop.requested, gpu_state_end=gpu_state_end)
    return writer
