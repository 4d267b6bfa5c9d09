"""What each file of a run folder must hold before a reader trusts it (storage.py reads them):
the shapes that RunWriter, sweep.run_meta, the cluster and merge_runs write. Each check returns
what is wrong, naming the column or key and what was expected, or None; the reader adds the file
and the line. And the table that rows make: its columns' types (to_frame), every row's role
(with_roles), and whether a results.csv holds a record's rows (same_rows)."""

from __future__ import annotations

import math
import re
import reprlib
from typing import Any, Callable, get_args

import numpy as np
import pandas as pd

from ..config.schema import MAX_DIM, NAME_PATTERN, OP_NAMES, Bits, DType, Granularity, GroupSize, Scheme
from .schema import (CLOCKS, COLUMNS, DTYPE_CEILING, ERROR, IDENTITY, INT8_CEILING, LEGACY_ROLES, MEMORY,
                     OUTPUT_ERROR, TIME)

MEASURED = [c for c in TIME + CLOCKS + MEMORY + ERROR + OUTPUT_ERROR if c != "timing_valid"]
NUMERIC = MEASURED + ["bits", "group_size", "M", "N", "K", "layers", "depth"]
# the columns the table holds as integers (to_frame: Int64)
INTEGER = ["bits", "group_size", "M", "N", "K", "layers", "depth", "n_samples", "weight_bytes", "peak_mem_bytes"]
NON_FINITE = ("inf", "-inf", "nan")  # how RunWriter writes a float JSON has no number for (_json_safe)
BOOLEANS = {"true": True, "false": False}  # timing_valid in results.csv: True, False (any case)
# the columns that hold text (or nothing): every one that is neither numeric nor timing_valid
TEXT = [c for c in COLUMNS if c not in NUMERIC and c != "timing_valid" and c != "schema_version"]
# the values a case's axes take (the config's: a row holding another is not a row quantbench wrote,
# and re-drawing its weights, report, would fail)
AXIS_VALUES: dict[str, tuple] = {"op": OP_NAMES, **{axis: get_args(kind) for axis, kind in
                                                    (("bits", Bits), ("scheme", Scheme), ("granularity", Granularity),
                                                     ("group_size", GroupSize), ("dtype", DType))}}


def axis_problem(col: str, value: Any) -> str | None:
    """What is wrong with one value of a case axis (None, or a value the sweep can give, is fine)."""
    if value is None:
        return None
    if col in AXIS_VALUES and value not in AXIS_VALUES[col]:
        return f"column {col} holds {reprlib.repr(value)}, expected one of {', '.join(map(str, AXIS_VALUES[col]))}"
    if col in ("M", "N", "K") and not 1 <= value <= MAX_DIM:
        return f"column {col} holds {value!r}, expected a dimension from 1 to {MAX_DIM}"
    return None


def row_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a row of rows.jsonl, in the words storage._read_table uses for
    results.csv; None for a row as RunWriter writes it: numbers (or null, or NON_FINITE) in the
    numeric columns, whole ones in the integer columns, and timing_valid true or false where the
    row has a time."""
    for col in NUMERIC:
        value = row.get(col)
        if value is None or (value in NON_FINITE and col not in INTEGER):
            continue
        if not is_number(value):
            return f"column {col} holds {reprlib.repr(value)}, expected a number"
        if col in INTEGER and not whole(value):
            return f"column {col} holds {value!r}, expected a whole number"
        problem = axis_problem(col, value)
        if problem:
            return problem
    for col in TEXT:
        value = row.get(col)
        if value is not None and not isinstance(value, str):
            return f"column {col} holds {reprlib.repr(value)}, expected a text (or null)"
        problem = axis_problem(col, value)
        if problem:
            return problem
    ms, valid = row.get("ms"), row.get("timing_valid")
    timed = ms is not None and ms != "nan" and not (isinstance(ms, float) and math.isnan(ms))
    if valid is None and timed:
        return "column timing_valid is empty, expected true or false (the row has a time, ms)"
    if valid is not None and not isinstance(valid, bool):
        return f"column timing_valid holds {reprlib.repr(valid)}, expected true or false"
    return None


def whole(value: int | float) -> bool:
    """A whole number that fits the table's 64-bit integer columns."""
    return (isinstance(value, int) or value.is_integer()) and abs(value) < 2**63


def is_number(value: Any) -> bool:
    """A JSON number (JSON's true and false are Python bools, which are ints)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sample_problem(rec: Any) -> str | None:
    """What is wrong with a record of samples.jsonl(.gz); None for one as RunWriter writes it: an
    object with its case key and samples_ms, a non-empty list of finite times."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, expected a sample record (an object with case and samples_ms)"
    if not isinstance(rec.get("case"), str):
        return f"case holds {reprlib.repr(rec.get('case'))}, expected the case key (a string)"
    times = rec.get("samples_ms")
    if not isinstance(times, list) or not times:
        return f"samples_ms holds {reprlib.repr(times)}, expected a non-empty list of times (ms)"
    for i, t in enumerate(times):
        # NaN or inf is no time: every statistic over it would be NaN
        if not is_number(t) or not math.isfinite(t):
            return f"samples_ms[{i}] holds {reprlib.repr(t)}, expected a finite number (ms)"
    return None


def _name(v: Any) -> bool:
    """A run id or config name as quantbench makes them (config.schema's NAME_PATTERN): it becomes a
    folder or file name (merge, report), so never a path."""
    return isinstance(v, str) and re.match(NAME_PATTERN, v) is not None


def _json_int(v: Any) -> bool:
    """A JSON integer (not a bool, not a float however whole): how the writers give counts."""
    return isinstance(v, int) and not isinstance(v, bool)


MAX_SHARDS = 10_000  # cli.running._shard's bound: merge lists every shard a run lacks
NAME = "a string: a name of letters, digits, '_', '.' and '-' (no path)"
# keys inside the objects of META_SHAPES, checked where the object and the key are there
NESTED_SHAPES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("config", "name"): (_name, NAME),
    ("config", "weights"): (lambda v: v is None or isinstance(v, dict), "an object"),
    ("config", "seed"): (lambda v: v is None or (_json_int(v) and v >= 0), "a whole number >= 0"),
    ("env", "gpu"): (lambda v: v is None or isinstance(v, str), "the GPU's name (a string) or null"),
    ("env", "gpu_memory_bytes"): (lambda v: v is None or (_json_int(v) and v >= 0), "a whole number of bytes or null"),
}

# the keys of meta.json that readers use, each with the shape its writers (RunWriter, sweep.run_meta,
# cluster, merge_runs) give it: a run of an older schema may lack one, never hold it in another shape
META_SHAPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "run_id": (_name, NAME),
    "config": (lambda v: isinstance(v, dict) and isinstance(v.get("name"), str), "an object with a string name"),
    "env": (lambda v: isinstance(v, dict), "an object"),
    "shard": (lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(map(_json_int, v))
                                      and 1 <= v[0] <= v[1] <= MAX_SHARDS), f"[I, N] with 1 <= I <= N <= {MAX_SHARDS}"),
    "envs": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v), "a list of objects"),
    "calibration": (lambda v: isinstance(v, dict), "an object"),
    "datasheet": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    # a worker's gpu names its model (analysis.loaded_run.gpu_of)
    "workers": (lambda v: isinstance(v, list) and all(isinstance(w, dict) and isinstance(w.get("gpu"), str | None)
                                                       for w in v), "a list of objects, each with its gpu a string"),
    "rows": (lambda v: _json_int(v) and v >= 0, "a whole number of rows"),
    "resumed_utc": (lambda v: isinstance(v, list), "a list"),
    "status_counts": (lambda v: isinstance(v, dict), "an object"),
    "missing_shards": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "a list of texts"),
}
# calibration's and the datasheet's rates (calibration.py, datasheets.py): a number, or null for
# one that could not be measured
RATES = {"copy_gbps", "hbm_gbps", "matmul_size", *DTYPE_CEILING.values(), INT8_CEILING}


def meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the keys of a meta.json that readers use (META_SHAPES, RATES); None where
    each is missing or in its writers' shape."""
    for key, (fits, expected) in META_SHAPES.items():
        if key in meta and not fits(meta[key]):
            return f"{key} holds {reprlib.repr(meta[key])}, expected {expected}"
    for (section, key), (fits, expected) in NESTED_SHAPES.items():
        if key in meta.get(section, {}) and not fits(meta[section][key]):
            return f"{section}.{key} holds {reprlib.repr(meta[section][key])}, expected {expected}"
    for env in meta.get("envs", []):  # a merge's every machine
        for (section, key), (fits, expected) in NESTED_SHAPES.items():
            if section == "env" and key in env and not fits(env[key]):
                return f"envs: {key} holds {reprlib.repr(env[key])}, expected {expected}"
    for section in ("calibration", "datasheet"):
        for key, value in (meta.get(section) or {}).items():
            if key in RATES and value is not None and not is_number(value):
                return f"{section}.{key} holds {reprlib.repr(value)}, expected a number"
    return None


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in MEASURED:
        df[col] = pd.to_numeric(df[col], errors="coerce")  # JSON lines carry inf as "inf"
    for col in INTEGER:
        df[col] = df[col].astype("Int64")
    return df


def with_roles(df: pd.DataFrame) -> pd.DataFrame:
    """Every row's role: as recorded, or for rows from before the column, the built-in's by name."""
    missing = df["role"].isna()
    if missing.any():
        df = df.copy()
        df["role"] = df["role"].astype(object).where(~missing, df["impl"].map(LEGACY_ROLES))
    return df


def same_rows(table: pd.DataFrame, recorded: list[dict[str, Any]]) -> bool:
    """Whether results.csv (read) holds the rows of rows.jsonl, in any order: the same run, cases,
    statuses and times (a table copied from another run, or a row cut short, holds as many other rows)."""
    def keys(df: pd.DataFrame) -> list[str]:
        out = []
        for row in df.reindex(columns=[*IDENTITY, "ms"]).itertuples(index=False):
            out.append("|".join("" if pd.isna(v) else f"{float(v):.12g}" if isinstance(v, (int, float, np.number))
                                and not isinstance(v, bool) else str(v) for v in row))
        return sorted(out)
    return keys(table) == keys(to_frame(recorded))
