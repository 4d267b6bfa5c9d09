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

from ..config.errors import did_you_mean, first_line
from ..config.schema import MAX_DIM
from .schema import CASE_KEY, COLUMNS, Measurement
from .contents import INTEGER, is_number, row_problem, whole
from .storage import RunFolderError, RunWriter, load_run, read_samples

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


# a case's columns (the run's row schema): integers, and texts; op and impl are always there
CASE_INTS = ("bits", "group_size", "M", "N", "K", "layers", "depth")
CASE_TEXTS = ("op", "impl", "scheme", "granularity", "dtype", "shape_name")
# the row columns the run's table holds as integers (contents.to_frame), beside the case's
ROW_INTS = tuple(c for c in INTEGER if c not in CASE_INTS)
ROW_TEXTS = ("device", "gpu", "status", "message", "role", "path", "kernel_config", "flags", "torch_version",
             "triton_version", "utc", "host", "gpu_uuid")
# the keys of a run's environment (execution/environment.py) that its summary and reports read
ENV_TEXTS = ("device", "gpu", "hostname", "platform", "python", "torch", "triton", "numpy", "pandas",
             "cuda_runtime", "git_commit", "driver", "cuda_driver", "nvml_uuid", "gpu_uuid", "compute_capability")
ENV_INTS = ("sm_count", "gpu_memory_bytes")
STATS = ("median", "min", "mean", "stddev")


class _Bad(Exception):
    """One key of a benchmark entry that is not what it should be: (key, what is wrong)."""


INT64_MAX = (1 << 63) - 1


def _is_number(v: Any) -> bool:
    """A JSON number the table can hold (its integers are 64-bit)."""
    return is_number(v) and (isinstance(v, float) or abs(v) <= INT64_MAX)


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _seconds(v: Any, key: str, positive: bool) -> None:
    """A time in seconds that stays finite in milliseconds."""
    if not _is_number(v) or not math.isfinite(v * 1e3) or v < 0 or (positive and v == 0):
        raise _Bad(key, f"holds {_shown(v)}, expected a finite number of seconds {'> 0' if positive else '>= 0'}")


def _check_columns(values: dict, key: str, ints: tuple[str, ...], texts: tuple[str, ...],
                   low: int = 1, high: int = MAX_DIM) -> None:
    """Whole numbers from low to high (the table's integer columns) and texts, or null."""
    for c in ints:
        v = values.get(c)
        if v is not None and not (is_number(v) and whole(v) and low <= v <= high):
            raise _Bad(f"{key}.{c}", f"holds {_shown(v)}, expected a whole number from {low} to {high} (or null)")
    for c in texts:
        if values.get(c) is not None and not isinstance(values[c], str):
            raise _Bad(f"{key}.{c}", f"holds {_shown(values[c])}, expected a text (or null)")


def _check_case(case: dict, key: str) -> tuple:
    """The case's identity (CASE_KEY's values), its keys checked against the row schema."""
    unknown = [c for c in case if c not in CASE_KEY]
    if unknown:
        raise _Bad(f"{key}.{unknown[0]}", f"is not a case key{did_you_mean(unknown[0], CASE_KEY)}; "
                                          f"a case has {', '.join(CASE_KEY)}")
    for c in ("op", "impl", "dtype", "N", "K"):  # what every case has (execution/cases.py's Case)
        if case.get(c) is None:
            raise _Bad(f"{key}.{c}", "is missing, and every quantbench case has it")
    if not (isinstance(case["op"], str) and case["op"] and isinstance(case["impl"], str) and case["impl"]):
        bad = "op" if not (isinstance(case["op"], str) and case["op"]) else "impl"
        raise _Bad(f"{key}.{bad}", f"holds {_shown(case[bad])}, expected a name (a non-empty text)")
    _check_columns(case, key, CASE_INTS, CASE_TEXTS)
    return tuple(case.get(c) for c in CASE_KEY)


def _check_bench(bench: Any) -> tuple:
    """One benchmark entry as from_pytest_benchmark reads it; its case identity. _Bad otherwise."""
    if not isinstance(bench, dict):
        raise _Bad("", f"is a {type(bench).__name__}, expected an object")
    extra = bench.get("extra_info")
    case = extra.get("case") if isinstance(extra, dict) else None
    if not isinstance(bench.get("stats"), dict) or not isinstance(case, dict) or "fullname" not in bench:
        raise _Bad("", "expected fullname, stats and extra_info.case (as tests/benchmarks writes them)")
    if not isinstance(bench["fullname"], str) or not bench["fullname"]:
        raise _Bad(".fullname", f"holds {_shown(bench['fullname'])}, expected the test's name (a non-empty text)")
    stats, data = bench["stats"], bench["stats"].get("data")
    if data is not None and not isinstance(data, list):
        raise _Bad(".stats.data", f"holds {_shown(data)}, expected the list of sample times in seconds")
    for j, v in enumerate(data or []):
        _seconds(v, f".stats.data[{j}]", positive=True)
    if not data:  # the statistics are all there is
        for k in STATS:
            _seconds(stats.get(k), f".stats.{k}", positive=False)
        rounds = stats.get("rounds")
        if not (isinstance(rounds, int) and not isinstance(rounds, bool) and 1 <= rounds <= INT64_MAX):
            raise _Bad(".stats.rounds", f"holds {_shown(rounds)}, expected a whole number of rounds >= 1")
    if extra.get("timing_valid") is not None and not isinstance(extra["timing_valid"], bool):
        raise _Bad(".extra_info.timing_valid", f"holds {_shown(extra['timing_valid'])}, expected true or false")
    if extra.get("gpu") is not None and not isinstance(extra["gpu"], str):
        raise _Bad(".extra_info.gpu", f"holds {_shown(extra['gpu'])}, expected the GPU's name (a text)")
    row = extra.get("row")
    if row is None:
        return _check_case(extra["case"], ".extra_info.case")
    if not isinstance(row, dict):
        raise _Bad(".extra_info.row", f"is a {type(row).__name__}, expected the run's row (an object)")
    # a quantbench export's row, which is what is written: as a row of rows.jsonl must be
    problem = row_problem(row)
    if problem:
        raise _Bad(".extra_info.row", problem)
    _check_columns(row, ".extra_info.row", ROW_INTS, ROW_TEXTS, low=0, high=INT64_MAX)
    return _check_case({c: row.get(c) for c in CASE_KEY}, ".extra_info.row")


def _check_env(data: dict) -> None:
    """The environment the run folder's meta.json will carry (_env_of): texts where texts are read."""
    machine, commit = data.get("machine_info") or {}, data.get("commit_info") or {}
    env = machine.get("quantbench_env")
    if env is not None and not isinstance(env, dict):
        raise _Bad("machine_info.quantbench_env", f"is a {type(env).__name__}, expected an object")
    where, env = ("machine_info.quantbench_env", env) if env is not None else ("", {
        "machine_info.gpu": machine.get("gpu"), "commit_info.id": commit.get("id")})
    for k, v in env.items():
        if v is None:
            continue
        name = f"{where}.{k}" if where else k
        if k in ENV_INTS and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise _Bad(name, f"holds {_shown(v)}, expected a whole number >= 0 (or null)")
        if (k in ENV_TEXTS or not where) and not isinstance(v, str):
            raise _Bad(name, f"holds {_shown(v)}, expected a text (or null)")
        if k == "git_dirty" and not isinstance(v, bool):
            raise _Bad(name, f"holds {_shown(v)}, expected true or false (or null)")


def read_pytest_benchmark(path: str | Path) -> dict:
    """A pytest-benchmark JSON file of quantbench cases, checked whole before anything is written:
    RunFolderError naming the file, the first entry that is not one (index and fullname) and its key."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise RunFolderError(f"{path}: {what}, expected a pytest-benchmark JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RunFolderError(f"{path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise RunFolderError(f"{path}: expected pytest-benchmark JSON (an object with a 'benchmarks' list)")
    for key in ("machine_info", "commit_info"):
        if not isinstance(data.get(key) or {}, dict):
            raise RunFolderError(f"{path}: {key}: expected an object")
    try:
        _check_env(data)
    except _Bad as e:
        raise RunFolderError(f"{path}: {e.args[0]}: {e.args[1]}") from None
    first: dict[Any, int] = {}
    for i, bench in enumerate(data["benchmarks"]):
        name = bench.get("fullname") if isinstance(bench, dict) else None
        named = f" ({_shown(name)})" if isinstance(name, str) else ""
        try:
            case = _check_bench(bench)
        except _Bad as e:
            key, problem = e.args
            which = f" (in benchmark {_shown(name)})" if named and key != ".fullname" else ""
            raise RunFolderError(f"{path}: benchmarks[{i}]{key}: {problem}{which}") from None
        for ident, what in ((case, "case"), (("fullname", name), "fullname")):
            if ident in first:
                j = first[ident]
                raise RunFolderError(f"{path}: benchmarks[{i}]{named}: the same {what} as benchmarks[{j}]; "
                                     f"a run holds each case once; drop one of them")
            first[ident] = i
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
        valid = bool(extra.get("timing_valid"))  # not said: not known to be a GPU timing
        if ms:  # saved with --benchmark-save-data: every statistic from the samples themselves
            row.update(Measurement(ms, valid).stats())
        else:
            row.update(ms=stats["median"] * 1e3, ms_min=stats["min"] * 1e3, ms_mean=stats["mean"] * 1e3,
                       ms_std=stats["stddev"] * 1e3, n_samples=stats["rounds"], timing_valid=valid,
                       cv=stats["stddev"] / stats["mean"] if stats["mean"] else None)
        writer.append_case(bench["fullname"], [{c: row.get(c) for c in COLUMNS}], [ms])
    writer.finish(summarize)
    return writer.path

