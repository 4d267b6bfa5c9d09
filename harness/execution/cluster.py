"""Sweeps on a Dask cluster (`quantbench run CONFIG --workers N` or `--scheduler ADDRESS`).

The unit of work is a workload: the cases that share one prepared input, measured wholly inside
one worker (sweep.measure_workload, as a local run measures it). Each worker has one thread and,
on a GPU machine, one GPU of its own (dask-cuda pins one worker to each), so no two cases ever
time on one device at once. The driver owns the run folder: each workload's rows are appended
(fsynced) as it comes back, so a killed driver resumes with `--resume` like a local run. A worker
that dies costs its workload one retry (the scheduler's `allowed-failures`, set to 1 for the
clusters started here); if it dies again, the workload's cases are recorded as errors with the
reason, and the sweep goes on.

Dask (`distributed`) and dask-cuda are the optional extra `quantbench[cluster]`.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from rich.progress import Progress

from ..config import ConfigError, RunConfig
from ..registry import load_registry
from ..results import RunWriter, utc_now
from .case import failed_row
from .cases import Case, expand
from .device import resolve_device, use_interpreter_on_cpu

RETRIES = 1  # a workload whose worker died is run once more, on whichever worker the scheduler picks
_benches: dict[tuple[str, str], tuple[Any, dict[str, Any], dict[str, Any]]] = {}  # per worker process


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("--workers and --scheduler run the sweep on Dask, which is not installed: "
                          "pip install 'quantbench[cluster]' (dask, distributed, dask-cuda)") from None
    return distributed


@contextmanager
def open_cluster(workers: int | None, scheduler: str | None, device: torch.device | None) -> Iterator[Any]:
    """A Dask client: of the running cluster at `scheduler`, or of a local cluster of `workers`
    processes (0: one per GPU, or per CPU core), one thread each; on a GPU machine one dask-cuda
    worker pinned to each GPU."""
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except OSError as e:
            raise ConfigError(f"--scheduler {scheduler}: no Dask scheduler answered ({e})") from None
        except ValueError as e:  # not an address Dask can parse
            raise ConfigError(f"--scheduler {scheduler!r}: not a scheduler address ({e}); expected "
                              f"tcp://host:port") from None
        try:
            yield client
        finally:
            client.close()
        return
    import dask
    with dask.config.set({"distributed.scheduler.allowed-failures": RETRIES}):
        if device is not None and device.type == "cuda":
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise ConfigError("--workers on a GPU machine pins one worker to each GPU with dask-cuda, which is "
                                  "not installed: pip install 'quantbench[cluster]'") from None
            count = torch.cuda.device_count()
            if workers and workers > count:
                raise ConfigError(f"--workers {workers}: this machine has {count} GPU(s), and a worker takes one")
            cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=list(range(workers or count)), threads_per_worker=1,
                                       dashboard_address=None)
        else:
            cores = os.cpu_count() or 1
            if workers and workers > cores:  # each a process running one workload at a time: more only contend
                raise ConfigError(f"--workers {workers}: this machine has {cores} CPU core(s), and an interpreter "
                                  "worker keeps one busy")
            cluster = distributed.LocalCluster(n_workers=workers or cores, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def _worker_bench(config: dict[str, Any], requested: str):
    """This worker's Bench (its device, calibration and NVML monitor; made once per process and
    config) and the columns that say where its rows were measured."""
    key = (json.dumps(config, sort_keys=True), requested)
    if key not in _benches:
        device = resolve_device(requested)
        use_interpreter_on_cpu(device)
        from ..ops.inputs import InputSource
        from .calibration import calibrate
        from .environment import collect_env
        from .gpu_monitor import open_monitor
        from .sweep import Bench, device_columns
        cfg = RunConfig.model_validate(config)
        monitor, why_not = open_monitor(device)
        env = collect_env(device, monitor, why_not)
        bench = Bench(cfg, load_registry(cfg.plugins), device, calibrate(device), monitor,
                      InputSource(cfg.weights, cfg.seed, str(device)))
        _benches[key] = (bench, device_columns(device, env), env)
    return _benches[key]


def worker_identity(config: dict[str, Any], requested: str) -> dict[str, Any]:
    """Run on every worker before the sweep: its environment and calibration."""
    bench, _, env = _worker_bench(config, requested)
    return {"env": env, "calibration": bench.calibration}


def measure_on_worker(config: dict[str, Any], requested: str, run_id: str,
                      todo: list[Case]) -> list[tuple[str, list[dict[str, Any]], list[tuple]]]:
    """The task: one workload's cases measured on this worker, as (case key, rows, samples)."""
    from .sweep import measure_workload
    bench, columns, _ = _worker_bench(config, requested)
    return [(case.key(), rows, samples)
            for case, rows, samples in measure_workload(bench, todo, {"run_id": run_id, **columns})]


def _lost_workload(todo: list[Case], registry, run_id: str, error: Exception) -> list[tuple[str, list, list]]:
    """The rows of a workload that never came back (its worker died twice): each case an error."""
    row = failed_row(error, "its worker died while measuring this workload, and again on the retry: ")
    return [(case.key(), [{**case.as_dict(), "run_id": run_id, "role": registry.get(case.op, case.impl).role.value,
                           "utc": utc_now(), **row}], [()]) for case in todo]


def _workers_meta(identities: dict[str, dict[str, Any]], allow_mixed: bool) -> list[dict[str, Any]]:
    """meta.json `workers`: each worker's address, host, GPU and calibration. Refuses workers of
    different GPU models unless `allow_mixed` (their latencies do not belong in one table)."""
    workers = [{"address": address, "host": ident["env"]["hostname"], "gpu": ident["env"]["gpu"],
                "gpu_uuid": ident["env"].get("gpu_uuid"), "calibration": ident["calibration"]}
               for address, ident in sorted(identities.items())]
    models = sorted({w["gpu"] for w in workers})
    if len(models) > 1 and not allow_mixed:
        raise ConfigError(f"the cluster's workers have {len(models)} GPU models ({', '.join(models)}): their "
                          f"latencies are not comparable in one run; pass --allow-mixed to run on all of them")
    return workers


def run_on_cluster(cfg: RunConfig, out_root, device: str | None, show_progress: bool, resume,
                   workers: int | None, scheduler: str | None, allow_mixed: bool) -> RunWriter:
    """run_sweep's job on a Dask cluster: every workload of `cfg` measured on a worker, the rows
    written here as each comes back. Returns the writer."""
    from ..analysis.tables import summary_markdown
    from .sweep import PROGRESS_COLUMNS, StopAfterCase, open_writer, run_meta, workloads_todo
    from .timing import engine_note
    requested = device or cfg.device
    local = None
    if scheduler is None:  # the local cluster's workers inherit the interpreter setting from here
        local = resolve_device(requested)
        use_interpreter_on_cpu(local)
    registry = load_registry(cfg.plugins)
    cases = expand(cfg, registry)
    config = cfg.model_dump(mode="json")
    with open_cluster(workers, scheduler, local) as client:
        client.wait_for_workers(1, timeout="60s")
        try:
            identities = client.run(worker_identity, config, requested)
        except Exception as e:  # e.g. a worker without the GPU asked for, or without quantbench or a plugin
            raise ConfigError(f"a Dask worker could not prepare to measure ({type(e).__name__}: {e})") from None
        worker_list = _workers_meta(identities, allow_mixed)
        first = identities[worker_list[0]["address"]]
        note = engine_note(torch.device(first["env"]["device"]), cfg.timing)
        meta = {**run_meta(cfg, registry, cases, first["env"], first["calibration"], note, None), "workers": worker_list}
        writer = open_writer(cfg, out_root, resume, cfg.name, meta)
        todos = workloads_todo(cases, writer.done)
        futures = {client.submit(measure_on_worker, config, requested, writer.run_id, todo, pure=False,
                                 retries=RETRIES): todo for todo in todos}
        distributed = _distributed()
        resumed, arrived = len(writer.rows), {}
        with StopAfterCase() as stop, Progress(*PROGRESS_COLUMNS, disable=not show_progress, transient=True) as progress:
            task = progress.add_task(cfg.name, total=len(cases), completed=len(writer.done))
            pending = len(futures)
            for future in distributed.as_completed(futures):
                todo = futures[future]
                try:
                    results = future.result()
                except Exception as e:  # the worker died twice (KilledWorker), or the task itself failed
                    results = _lost_workload(todo, registry, writer.run_id, e)
                for key, rows, samples in results:
                    writer.append_case(key, rows, samples)
                    arrived[key] = writer.rows[len(writer.rows) - len(rows):]
                    progress.advance(task)
                pending -= 1
                busy = min(pending, len(worker_list))
                progress.update(task, description=f"{cfg.name}: {busy} of {len(worker_list)} workers busy")
                if stop.requested:
                    client.cancel(list(futures))
                    print("stopped: the workloads in flight are dropped; --resume measures them", file=sys.stderr)
                    break
    # results.csv in the sweep's order, as a local run writes it (rows.jsonl keeps the order of arrival)
    writer.rows[resumed:] = [row for case in cases if case.key() in arrived for row in arrived[case.key()]]
    writer.finish(summary_markdown, stopped_early=stop.requested, gpu_state_end=None)
    return writer
