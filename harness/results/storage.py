"""The results of a run on disk: one folder, rows appended as they are measured, tables at the end.

    results/<name>-<UTC timestamp>/
        rows.jsonl   one JSON line per finished case (all its rows), fsynced before the next case
        samples.jsonl.gz  every timed sample (ms) of every row, for statistics across runs: appended
                     to samples.jsonl while the run goes, compressed when it finishes (runs written
                     before that keep a plain samples.jsonl, and every reader takes both)
        results.csv  the long-format table (one row per case and implementation), written atomically
        meta.json    the config as loaded, the environment, the schema version
        summary.md   pivot tables people read

What each column means is schema.py's.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import reprlib
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..config.errors import first_line
from .contents import (BOOLEANS, INTEGER, NUMERIC, meta_problem, row_problem, same_rows, sample_problem, to_frame,
                       with_roles)
from .schema import COLUMNS, IDENTITY, SCHEMA_VERSION

SAMPLES = "samples.jsonl"         # appended, one line per timed row, while the run goes
SAMPLES_GZ = "samples.jsonl.gz"   # the same lines, compressed (about 6x) once the run has finished


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write(path: Path, data: str | bytes) -> None:
    """path holds data, whole, or what it held before (written beside it, synced, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def samples_path(run: Path) -> Path:
    """Where a run folder's raw samples are. The plain file wins when both exist: it is only ever
    beside the compressed one when a finish was cut between the two (same lines in both) or a
    resume has started appending to it again (the plain file is the newer)."""
    plain = run / SAMPLES
    return plain if plain.exists() or not (run / SAMPLES_GZ).exists() else run / SAMPLES_GZ


def has_samples(run: Path) -> bool:
    return (run / SAMPLES).is_file() or (run / SAMPLES_GZ).is_file()


def read_samples(run: Path, drop_torn_tail: bool = False) -> list[dict[str, Any]]:
    """Every sample record of a run folder, from samples.jsonl or samples.jsonl.gz (none: []):
    each an object with its case key and samples_ms, a list of finite times, as RunWriter writes
    them; RunFolderError naming the file and line of any other."""
    path = samples_path(run)
    records = read_lines(path, drop_torn_tail)
    for number, rec in enumerate(records, start=1):
        problem = sample_problem(rec)
        if problem:
            raise RunFolderError(f"{path}:{number}: {problem}")
    return records


def _replace_samples(run: Path, lines: str) -> None:
    """samples.jsonl.gz holding `lines`, written atomically, then no plain samples.jsonl. mtime 0 in
    the gzip header, so that the same samples give the same bytes (git keeps a re-written run as is)."""
    atomic_write(run / SAMPLES_GZ, gzip.compress(lines.encode(), compresslevel=9, mtime=0))
    (run / SAMPLES).unlink(missing_ok=True)


def write_samples(run: Path, records: list[dict[str, Any]]) -> None:
    """The sample records of a finished run, compressed, in place of any plain samples.jsonl."""
    _replace_samples(run, "".join(json.dumps(rec) + "\n" for rec in records))


def compress_samples(run: Path) -> None:
    """Replace a finished run's samples.jsonl by samples.jsonl.gz (the same lines)."""
    if (run / SAMPLES).exists():
        _replace_samples(run, (run / SAMPLES).read_text())


def _append_line(f, record: dict[str, Any]) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan; pandas reads "inf"/"nan" back as floats
    return value


class RunWriter:
    """Writes a run folder as the run goes. Each finished case is one line of rows.jsonl (all its
    rows), flushed and fsynced before the next case starts, so a killed run loses at most the case
    it was in, and a resumed run knows exactly which cases are done."""

    def __init__(self, path: Path, meta: dict[str, Any], done: list[tuple[str, list[dict[str, Any]]]]):
        self.path = path
        self.run_id = meta["run_id"]
        self.meta = meta
        self.done = {key for key, _ in done}
        self.rows = [row for _, rows in done for row in rows]
        atomic_write(self.path / "meta.json", json.dumps(self.meta, indent=2, default=str))
        self._rows_file = open(self.path / "rows.jsonl", "a")
        self._samples_file = open(self.path / SAMPLES, "a")

    @classmethod
    def create(cls, out_root: str | Path, name: str, meta: dict[str, Any]) -> "RunWriter":
        path = new_run_folder(out_root, name)
        run_id = path.name
        return cls(path, {"schema_version": SCHEMA_VERSION, "run_id": run_id, "started_utc": utc_now(), **meta}, [])

    @classmethod
    def resume(cls, path: str | Path) -> "RunWriter":
        """Continue a run folder: keep its intact cases (a line cut short by a kill is dropped and
        its case runs again) and the samples of those cases only."""
        path = Path(path)
        meta = read_meta(path, required=True)
        done = read_cases(path / "rows.jsonl", drop_torn_tail=True)
        if any(key is None for key, _ in done):
            raise RunFolderError(f"{path}: its rows.jsonl has one row a line, with no case records (schema 1): "
                                 f"such a run cannot be resumed; run its config again")
        keys = {key for key, _ in done}
        samples = [rec for rec in read_samples(path, drop_torn_tail=True) if rec["case"] in keys]
        atomic_write(path / "rows.jsonl", "".join(json.dumps({"case": k, "rows": r}) + "\n" for k, r in done))
        # appending goes on in the plain file; the compressed one of a finished run goes once the
        # plain one holds its lines (the plain file wins while both exist: samples_path)
        atomic_write(path / SAMPLES, "".join(json.dumps(rec) + "\n" for rec in samples))
        (path / SAMPLES_GZ).unlink(missing_ok=True)
        meta.setdefault("resumed_utc", []).append(utc_now())
        # unfinished until finish(): a resume cut short is read from rows.jsonl, its new cases too;
        # a merge's missing shards are what the resume measures (the config's every case)
        for key in ("finished_utc", "rows", "status_counts", "stopped_early", "missing_shards"):
            meta.pop(key, None)
        for stale in ("results.csv", "summary.md"):
            (path / stale).unlink(missing_ok=True)
        return cls(path, meta, done)

    def append_case(self, key: str, rows: list[dict[str, Any]], samples: list[tuple[float, ...]]) -> None:
        """Record one finished case (its rows, and each row's raw samples) durably."""
        rows = [{col: row.get(col) for col in COLUMNS} for row in rows]
        for row, row_samples in zip(rows, samples, strict=True):
            if row_samples:
                ident = {col: row[col] for col in IDENTITY if col not in ("status", "message")}
                _append_line(self._samples_file, {"case": key, **ident, "samples_ms": list(row_samples)})
        _append_line(self._rows_file, {"case": key, "rows": [{k: _json_safe(v) for k, v in r.items()} for r in rows]})
        self.rows.extend(rows)
        self.done.add(key)

    def finish(self, summarize: Callable[[pd.DataFrame, dict[str, Any]], str], **meta: Any) -> pd.DataFrame:
        """Write results.csv, meta.json (with the end time, status counts and `meta`) and summary.md,
        and compress the samples."""
        self._rows_file.close()
        self._samples_file.close()
        compress_samples(self.path)
        df = to_frame(self.rows)
        atomic_write(self.path / "results.csv", df.to_csv(index=False))
        counts = df["status"].value_counts().to_dict() if len(df) else {}
        self.meta.update({"finished_utc": utc_now(), "rows": len(df), "status_counts": counts, **meta})
        atomic_write(self.path / "meta.json", json.dumps(self.meta, indent=2, default=str))
        atomic_write(self.path / "summary.md", summarize(df, self.meta))
        return df


class RunFolderError(Exception):
    """A run folder that cannot be read as it is: the message names the file and line."""


def writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a folder this process can write in, made if missing; RunFolderError saying why
    not (a file there, no permission) before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{flag} {path}: is a file, expected a folder to write in")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"{flag} {path}: cannot be made ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {path}: not writable by this user")
    return path


def new_run_folder(out_root: str | Path, name: str) -> Path:
    """A new folder `name-<UTC second>` under out_root; two runs started in the same second get
    -2, -3, ... rather than one of them failing."""
    base = f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    root = writable_folder(out_root)
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"{root}: 999 run folders named {base}-*; choose another --out")


def read_lines(path: Path, drop_torn_tail: bool = False) -> list[Any]:
    """The JSON records of a .jsonl file. A last line without its newline was cut short by a kill:
    dropped when `drop_torn_tail`, an error otherwise; any other bad line is an error naming the
    file and line (the lines before it are intact)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise RunFolderError(f"{path}: not a readable gzip file of JSON lines ({e})") from None
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line.decode()))
        except UnicodeDecodeError:
            raise RunFolderError(f"{path}:{number}: not UTF-8 text, expected a JSON record; lines 1-{number - 1} "
                                 f"are intact") from None
        except (json.JSONDecodeError, RecursionError) as e:
            why = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise RunFolderError(f"{path}:{number}: not a valid JSON record ({why}); lines 1-{number - 1} "
                                 f"are intact") from None
    if torn and not drop_torn_tail:
        raise RunFolderError(f"{path}:{len(lines) + 1}: the last line is cut short (a killed run?); "
                             f"lines 1-{len(lines)} are intact: resume the run to continue it")
    return records


def read_cases(path: Path, drop_torn_tail: bool = False) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """(case key, its rows) for each record of a rows.jsonl. Runs of schema 1 wrote one row a line,
    with no case records: each such row is read as a case of its own (key None). A line that is
    neither, or a row with a value its column cannot hold, is an error naming the file and line."""
    cases = []
    for number, rec in enumerate(read_lines(path, drop_torn_tail), start=1):
        if isinstance(rec, dict) and "case" in rec and "rows" in rec:
            key, rows = rec["case"], rec["rows"]
            if not isinstance(key, str):
                raise RunFolderError(f"{path}:{number}: case holds {reprlib.repr(key)}, expected the case key (a text)")
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise RunFolderError(f"{path}:{number}: rows holds {reprlib.repr(rows)}, expected a list of "
                                     f"rows (objects)")
        elif isinstance(rec, dict) and "op" in rec and "impl" in rec:
            key, rows = None, [rec]
        else:
            raise RunFolderError(f"{path}:{number}: neither a case record ('case' and 'rows') nor a row "
                                 f"('op', 'impl')")
        for row in rows:
            problem = row_problem(row)
            if problem:
                raise RunFolderError(f"{path}:{number}: {problem}")
        cases.append((key, rows))
    return cases


def read_meta(run: str | Path, required: bool = False) -> dict[str, Any]:
    """A run folder's meta.json: a JSON object written by this schema or an older one. {} where
    there is none and it is not `required`; RunFolderError naming the file otherwise."""
    meta_file = Path(run) / "meta.json"
    if not meta_file.exists():
        if required:
            raise RunFolderError(f"{meta_file}: missing; is {run} a run folder?")
        return {}
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RunFolderError(f"{meta_file}: not valid JSON ({e}); a run's meta.json is a JSON object") from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{meta_file}: expected a JSON object, got a {type(meta).__name__}")
    version = meta.get("schema_version")
    if version is None:
        raise RunFolderError(f"{meta_file}: no schema_version: not the meta.json of a quantbench run")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunFolderError(f"{meta_file}: schema_version holds {reprlib.repr(version)}, expected a whole number "
                             f">= 1: not the meta.json of a quantbench run")
    if version > SCHEMA_VERSION:
        raise RunFolderError(f"{meta_file}: schema version {version} is newer than this quantbench reads "
                             f"({SCHEMA_VERSION}); upgrade quantbench")
    problem = meta_problem(meta)
    if problem:
        raise RunFolderError(f"{meta_file}: {problem}")
    return meta


def _read_table(csv: Path, current: bool) -> pd.DataFrame:
    """results.csv with every numeric column numeric (whole numbers in the integer ones) and
    timing_valid True or False wherever a row has a time; RunFolderError naming the file, and the
    column and row, for anything else. `current`: written by this schema version, so every column
    of it must be there (an older run lacks the newer ones)."""
    try:
        df = pd.read_csv(csv, dtype={"timing_valid": str})  # as written, so that only True or False is read as one
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(f"{csv}: not a readable results table ({first_line(e)})") from None
    if not isinstance(df.index, pd.RangeIndex):  # a line with more fields than the header: pandas made them an index
        raise RunFolderError(f"{csv}: a row holds more fields than the header names: not a whole quantbench "
                             f"results table")
    missing = [c for c in (COLUMNS if current else ("op", "impl", "status", "ms")) if c not in df.columns]
    if missing:
        raise RunFolderError(f"{csv}: no column {', '.join(missing[:5])}: not a whole quantbench results table")
    has_validity = "timing_valid" in df.columns
    # runs written before a column existed read it as missing, never as an error
    df = df.reindex(columns=COLUMNS + [c for c in df.columns if c not in COLUMNS])
    for col in NUMERIC:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if col in INTEGER:
            bad |= values.notna() & ~(values % 1 == 0)  # inf % 1 is NaN: not whole either
        if bad.any():
            row = int(bad.idxmax())
            held = df.at[row, col]
            held = held.item() if isinstance(held, np.generic) else held  # 4.5, not np.float64(4.5)
            expected = "a whole number" if col in INTEGER and not pd.isna(values[row]) else "a number"
            raise RunFolderError(f"{csv}: row {row + 2}: column {col} holds {held!r}, expected {expected}")
        df[col] = values
    if has_validity:
        written = df["timing_valid"]
        valid = written.str.lower().map(BOOLEANS)
        bad = valid.isna() & (written.notna() | df["ms"].notna())
        if bad.any():
            row = int(bad.idxmax())
            said = (f"holds {written[row]!r}, expected True or False" if pd.notna(written[row]) else
                    "is empty, expected True or False (the row has a time, ms)")
            raise RunFolderError(f"{csv}: row {row + 2}: column timing_valid {said}")
        df["timing_valid"] = valid
    return df


def finished_rows(meta: dict[str, Any]) -> int | None:
    """The row count a run wrote in meta.json when it finished; None for a run that did not."""
    return meta.get("rows") if "finished_utc" in meta else None


def load_run(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A run folder's table and metadata. rows.jsonl is the record: results.csv is read when it
    holds the same rows, and rebuilt from rows.jsonl (with a warning) when it does not, as after a
    run cut between the two writes or a damaged copy."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    meta = read_meta(path)
    csv, record = path / "results.csv", path / "rows.jsonl"
    if not csv.exists() and not record.exists():
        raise FileNotFoundError(f"{path}: neither results.csv nor rows.jsonl is there")
    recorded = [row for _, rows in read_cases(record) for row in rows] if record.exists() else None
    finished = "finished_utc" in meta
    expected = finished_rows(meta)
    table, problem = None, None
    if csv.exists():
        try:
            table = _read_table(csv, meta.get("schema_version") == SCHEMA_VERSION)
        except RunFolderError as e:
            if recorded is None:
                raise
            problem = str(e)
    if recorded is None or (table is not None and len(table) == len(recorded) and same_rows(table, recorded)):
        df = table
    elif table is not None and len(table) == expected and len(recorded) != expected:
        print(f"warning: {record} holds {len(recorded)} rows, {csv} and meta.json {expected}: reading "
              f"results.csv (the record is damaged)", file=sys.stderr)
        df = table
    else:
        if csv.exists():
            problem = problem or (f"{csv} holds {len(table)} rows, {record} {len(recorded)}"
                                  if len(table) != len(recorded) else f"{csv} holds other rows than {record}")
            print(f"warning: {problem}: reading rows.jsonl, the record (the table is stale or damaged)",
                  file=sys.stderr)
        df = to_frame(recorded)
    if expected is not None and len(df) != expected:
        raise RunFolderError(f"{path}: meta.json says the run finished with {expected} rows, its tables hold "
                             f"{len(df)}: the folder is damaged (copy it again from where it was made)")
    if meta and (not finished or meta.get("stopped_early")):
        # killed, stopped, or still running: what is there is real, but not the whole sweep
        why = ("was stopped early" if meta.get("stopped_early") else
               f"lacks shard(s) {', '.join(meta['missing_shards'])}" if meta.get("missing_shards") else
               "did not finish (meta.json has no finished_utc)")
        print(f"warning: {path}: the run {why}; its {len(df)} recorded rows are read; "
              f"`quantbench run CONFIG --resume {path}` measures the rest", file=sys.stderr)
    return with_roles(df), meta
