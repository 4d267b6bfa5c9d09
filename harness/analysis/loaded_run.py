"""A run folder as the analysis reads it: loaded once, its cases keyed the same way whether read
from results.csv or from JSON lines, its raw samples by case on first use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import CASE_KEY, RunFolderError, load_run, read_samples


def case_key(values) -> str:
    """A case's identity as text, the same whether read from results.csv (NaN, 8.0), from a
    JSON line (null, 8) or from rows.jsonl's table (pd.NA in an Int64 column)."""
    def norm(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    return "|".join(norm(v) for v in values)


def samples_by_case(run: Path) -> dict[str, list[float]]:
    """Each row's raw samples by case key; CompareError naming the run and the case where a row has
    two records (a run writes one a row: which of two would be its samples?)."""
    found: dict[str, list[float]] = {}
    for rec in read_samples(run):
        key = case_key(rec.get(c) for c in CASE_KEY)
        if key in found:
            raise CompareError(f"{run}: the samples of {describe_case(key)} are recorded twice; expected one "
                               f"record a row")
        found[key] = rec["samples_ms"]
    return found


def keyed(df: pd.DataFrame, source: str | Path = "run") -> pd.DataFrame:
    """The table indexed by case key; CompareError naming `source` and the case where a case is
    there twice (two pytest-benchmark entries of one case): a row looked up by its key must be one."""
    index = pd.Index([case_key(row) for row in df[CASE_KEY].itertuples(index=False)], name="key")
    twice = index[index.duplicated()].unique()
    if len(twice):
        shown = "; ".join(describe_case(k) for k in twice[:3]) + (f"; {len(twice) - 3} more" if len(twice) > 3 else "")
        raise CompareError(f"{source}: {len(twice)} case(s) appear more than once ({shown}); "
                           f"expected each case once in a run")
    return df.set_index(index)


def describe_case(key: str) -> str:
    """A case key as `op=matmul impl=triton bits=4 ...`, the columns left empty left out."""
    return " ".join(f"{c}={v}" for c, v in zip(CASE_KEY, key.split("|")) if v)


def gpu_of(meta: dict) -> str | None:
    """The GPU model a run was measured on; for a cluster run over several models (--allow-mixed),
    a label naming them all, so that its latencies are never judged against one GPU's."""
    models = sorted({worker.get("gpu") for worker in meta.get("workers") or []}, key=str)
    if len(models) > 1:
        return "mixed (" + ", ".join(map(str, models)) + ")"
    return (meta.get("env") or {}).get("gpu")


class CompareError(RunFolderError):
    """A run folder that cannot be compared as asked; the message names it and the reason."""


@dataclass
class LoadedRun:
    """A run folder read once: its table, its metadata and (on first use) its raw samples by case."""

    path: Path
    df: pd.DataFrame
    meta: dict
    _samples: dict[str, list[float]] | None = None

    @classmethod
    def of(cls, run: str | Path | LoadedRun) -> LoadedRun:
        return run if isinstance(run, LoadedRun) else cls(Path(run), *load_run(run))

    def keyed(self) -> pd.DataFrame:
        """The table indexed by case key (keyed); CompareError naming this folder where a case is there twice."""
        return keyed(self.df, self.path)

    @property
    def samples(self) -> dict[str, list[float]]:
        if self._samples is None:
            self._samples = samples_by_case(self.path)
        return self._samples


Run = str | Path | LoadedRun
