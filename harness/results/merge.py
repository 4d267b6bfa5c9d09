"""Join run folders (the shards of a CI matrix, or one config run on several machines) into one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing import Any, Callable

import pandas as pd

from .schema import SCHEMA_VERSION
from .storage import (atomic_write, finished_rows, new_run_folder, read_cases, read_meta, read_samples, to_frame,
                      utc_now, write_samples)


class MergeError(Exception):
    """Run folders that cannot be merged; the message says which and why."""


def merge_runs(runs: list[str | Path], out_root: str | Path,
               summarize: Callable[[pd.DataFrame, dict[str, Any]], str]) -> Path:
    """A new run folder holding every case of `runs`, its summary.md written by `summarize`.
    Refused when their schema versions or configs differ, or when one case appears in two of them."""
    runs = [Path(r) for r in runs]
    metas = [read_meta(r, required=True) for r in runs]
    for run, meta in zip(runs, metas, strict=True):
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise MergeError(f"{run}: schema version {meta.get('schema_version')}, this quantbench writes "
                             f"{SCHEMA_VERSION}: columns would not line up")
        if not isinstance(meta.get("config"), dict):
            raise MergeError(f"{run}: meta.json holds no config: not a run folder merge can join")
        if "run_id" not in meta:
            raise MergeError(f"{run}: meta.json holds no run_id: not a run folder merge can join")
        if meta.get("config") != metas[0].get("config"):
            raise MergeError(f"{run}: made with a different config than {runs[0]}")
    cases, samples, seen = [], [], {}
    for run, run_meta in zip(runs, metas, strict=True):
        if not (run / "rows.jsonl").exists():
            raise MergeError(f"{run}: no rows.jsonl, the record merge joins (not a run folder, or a damaged one)")
        run_cases = read_cases(run / "rows.jsonl")
        expected = finished_rows(run_meta)
        recorded = sum(len(rows) for _, rows in run_cases)
        if expected is not None and recorded != expected:
            raise MergeError(f"{run}: rows.jsonl holds {recorded} rows, meta.json says the run finished with "
                             f"{expected}: the record is damaged")
        for key, rows in run_cases:
            if key in seen:
                raise MergeError(f"case {key} is in both {seen[key]} and {run}")
            seen[key] = run
            cases.append((key, rows))
        samples += read_samples(run)
    df = to_frame([row for _, rows in cases for row in rows])  # before the folder: nothing made for a bad input
    path = new_run_folder(out_root, f"{metas[0]['config']['name']}-merged")
    run_id = path.name
    meta = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "merged_utc": utc_now(),
            "merged_from": [m["run_id"] for m in metas], "config": metas[0]["config"],
            "env": metas[0].get("env", {}), "envs": [m.get("env", {}) for m in metas],
            "calibration": metas[0].get("calibration", {}), "datasheet": metas[0].get("datasheet"),
            "rows": len(df),
            "status_counts": df["status"].value_counts().to_dict()}
    shards = {tuple(m["shard"]) for m in metas if m.get("shard")}
    counts = {n for _, n in shards}
    missing = [f"{i}/{n}" for n in counts for i in range(1, n + 1) if (i, n) not in shards]
    if missing:
        meta["missing_shards"] = missing
    if any(m.get("stopped_early") for m in metas):
        meta["stopped_early"] = True
    # else the merged run, like a shard of it or a sweep with shards left out, is unfinished
    if all("finished_utc" in m for m in metas) and not missing and not meta.get("stopped_early"):
        meta["finished_utc"] = meta["merged_utc"]
    # written in a hidden folder beside it, then moved in one rename: a merge cut short leaves no
    # run folder that looks whole
    staging = path.parent / f".{path.name}.partial"
    staging.mkdir()
    try:
        atomic_write(staging / "rows.jsonl", "".join(json.dumps({"case": k, "rows": r}) + "\n" for k, r in cases))
        write_samples(staging, samples)
        atomic_write(staging / "results.csv", df.to_csv(index=False))
        atomic_write(staging / "meta.json", json.dumps(meta, indent=2, default=str))
        atomic_write(staging / "summary.md", summarize(df, meta))
    except BaseException:
        path.rmdir()  # the empty folder new_run_folder reserved; the partial one stays hidden
        raise
    os.replace(staging, path)  # onto that empty folder, in one rename
    return path
