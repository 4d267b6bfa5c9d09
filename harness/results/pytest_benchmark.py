"""Conversion between quantbench run folders and pytest-benchmark's JSON, both ways.

A row becomes one pytest-benchmark entry named like the test in tests/benchmarks (so
`pytest --benchmark-compare` can line a converted run up with a pytest run), its statistics
computed by pytest-benchmark's own Stats from the raw samples (seconds), and its case in `params`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest_benchmark
from pytest_benchmark.stats import Stats

from .schema import CASE_KEY, COLUMNS, Measurement
from .storage import NUMERIC, RunFolderError, RunWriter, load_run, read_samples

BENCH_MODULE = "tests/benchmarks/test_kernels.py"


def _plain(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def bench_group(case: dict) -> str:
    """The pytest-benchmark group of a case, its op: tests/benchmarks sets it on every benchmark
    (`benchmark.group`), and the export writes the same, so that pytest-benchmark's tables group a
    real run and an exported one alike."""
    return case["op"]


def bench_id(case: dict) -> str:
    """The pytest id of a case: readable, unique within a sweep."""
    parts = [case["op"], case["impl"]]
    if case.get("bits") is not None:
        gran = f"g{case['group_size']}" if case["granularity"] == "group" else case["granularity"]
        parts += [f"int{case['bits']}", case["scheme"][:4], gran]
    parts.append(case["dtype"])
    if case.get("M") is not None:
        parts.append(f"M{case['M']}")
    parts.append(case.get("shape_name") or f"{case['N']}x{case['K']}")
    if case.get("layers") is not None:
        parts.append(f"L{case['layers']}")
    return "-".join(str(p) for p in parts)


def to_pytest_benchmark(run: str | Path) -> dict:
    """A run folder as pytest-benchmark JSON (rows with timings only)."""
    run = Path(run)
    df, meta = load_run(run)
    samples = {}
    for rec in read_samples(run):
        samples[bench_id({c: _plain(rec.get(c)) for c in CASE_KEY})] = rec["samples_ms"]
    benchmarks = []
    for row in df[df["ms"].notna()].to_dict("records"):
        case = {c: _plain(row[c]) for c in CASE_KEY}
        name = bench_id(case)
        stats = Stats()
        for ms in samples.get(name, [row["ms"]]):
            stats.update(ms / 1e3)
        benchmarks.append({
            "group": bench_group(case), "name": f"test_kernel[{name}]", "fullname": f"{BENCH_MODULE}::test_kernel[{name}]",
            "params": {"case": name}, "param": name,
            # the whole row, so that from-pytest-benchmark gives back every column (GB/s, errors,
            # bytes, host time...), not only what pytest-benchmark's statistics hold
            "extra_info": {"case": case, "timing_valid": bool(row["timing_valid"]), "gpu": row["gpu"],
                           "run_id": row["run_id"], "row": {c: _plain(row.get(c)) for c in COLUMNS}},
            "options": {"disable_gc": False, "timer": "cuda events", "min_rounds": 1, "max_time": None,
                        "min_time": None, "warmup": True},
            # one call per sample: pytest-benchmark's own runs record iterations per round, and its
            # compare and list read the key
            "stats": {**stats.as_dict(), "iterations": 1, "data": [ms / 1e3 for ms in samples.get(name, [])]},
        })
    env = meta.get("env", {})
    return {"machine_info": {"node": env.get("hostname"), "gpu": env.get("gpu"), "python_version": env.get("python"),
                             "quantbench_env": env},
            "commit_info": {"id": env.get("git_commit"), "dirty": env.get("git_dirty")},
            "benchmarks": benchmarks, "datetime": meta.get("started_utc"), "version": pytest_benchmark.__version__}


def read_pytest_benchmark(path: str | Path) -> dict:
    """A pytest-benchmark JSON file of quantbench cases, checked whole before anything is written:
    RunFolderError naming the file and the first entry that is not one."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no such file (expected pytest-benchmark JSON)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise RunFolderError(f"{path}: expected pytest-benchmark JSON (an object with a 'benchmarks' list)")
    for i, bench in enumerate(data["benchmarks"]):
        stats = bench.get("stats") if isinstance(bench, dict) else None
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        case = extra.get("case") if isinstance(extra, dict) else None
        if not isinstance(stats, dict) or not isinstance(case, dict) or "fullname" not in bench:
            raise RunFolderError(f"{path}: benchmarks[{i}]: expected fullname, stats and extra_info.case "
                                 f"(as tests/benchmarks writes them)")
        row = extra.get("row")
        if isinstance(row, dict):  # a quantbench export's row: its numbers must be numbers
            bad = [c for c in NUMERIC if row.get(c) is not None and not isinstance(row[c], (int, float))]
            if bad:
                raise RunFolderError(f"{path}: benchmarks[{i}].extra_info.row: {bad[0]} holds {row[bad[0]]!r}, "
                                     f"expected a number")
        needed = [k for k in ("median", "min", "mean", "stddev", "rounds") if not isinstance(stats.get(k), (int, float))]
        if needed and not stats.get("data"):
            raise RunFolderError(f"{path}: benchmarks[{i}].stats: no number for {', '.join(needed)} and no data")
    for key in ("machine_info", "commit_info"):
        if not isinstance(data.get(key) or {}, dict):
            raise RunFolderError(f"{path}: {key}: expected an object")
    return data


def _env_of(data: dict) -> dict[str, Any]:
    """The run environment: a quantbench export carries the whole of it; of a pytest-benchmark
    run, what its machine and commit info say."""
    machine = data.get("machine_info") or {}
    if isinstance(machine.get("quantbench_env"), dict):
        return machine["quantbench_env"]
    return {"gpu": machine.get("gpu"), "git_commit": (data.get("commit_info") or {}).get("id")}


def from_pytest_benchmark(path: str | Path, out_root: str | Path,
                          summarize: Callable[[pd.DataFrame, dict[str, Any]], str]) -> Path:
    """A pytest-benchmark JSON file (of tests/benchmarks, or converted from a run) as a run folder,
    its summary.md written by `summarize`."""
    data = read_pytest_benchmark(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    writer = RunWriter.create(out_root, f"pytest-benchmark-{Path(path).stem}", {
        "source": str(path), "machine_info": data.get("machine_info"), "commit_info": data.get("commit_info"),
        "env": _env_of(data),
        "imported_utc": stamp})
    for bench in data["benchmarks"]:
        stats, extra = bench["stats"], bench.get("extra_info", {})
        ms = tuple(s * 1e3 for s in stats.get("data") or [])
        if isinstance(extra.get("row"), dict):  # a quantbench export: the row as it was
            row = {**extra["row"], "run_id": writer.run_id}
            writer.append_case(bench["fullname"], [{c: row.get(c) for c in COLUMNS}], [ms])
            continue
        row = {**extra["case"], "run_id": writer.run_id, "status": "ok", "message": "",
               "gpu": extra.get("gpu")}
        if ms:  # saved with --benchmark-save-data: every statistic from the samples themselves
            row.update(Measurement(ms, bool(extra.get("timing_valid"))).stats())
        else:
            row.update(ms=stats["median"] * 1e3, ms_min=stats["min"] * 1e3, ms_mean=stats["mean"] * 1e3,
                       ms_std=stats["stddev"] * 1e3, n_samples=stats["rounds"], timing_valid=extra.get("timing_valid"),
                       cv=stats["stddev"] / stats["mean"] if stats["mean"] else None)
        writer.append_case(bench["fullname"], [{c: row.get(c) for c in COLUMNS}], [ms])
    writer.finish(summarize)
    return writer.path

