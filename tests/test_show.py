"""`quantbench show` in a terminal of 100 columns and for scripts: the compact default fits, every
column is there on request, and csv and markdown are plain tables."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "h200" / "peers-20261203T091124Z"  # ten implementations, two dtypes, NF4 and fp8 rows


def show(*args: str, columns: int = 100) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "show", str(RUN), *args],
                          capture_output=True, text=True, env=env)


def test_the_compact_default_fits_100_columns_without_cutting_a_value():
    out = show()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in out.stdout  # nothing cut short
    # one line per case: the first matmul case is on one line with its time and speedups
    row = next(line for line in lines if line.startswith("o_proj M=1 8192x8192") and "int4 asym g128" in line)
    assert "gemv" in row and len(row.split()) >= 8
    assert "--columns all" in out.stdout


def test_columns_by_name_and_glob_and_all():
    some = show("--columns", "shape,format,ms *", "--format", "csv")
    assert some.returncode == 0, some.stderr
    first = some.stdout.split("\n# ")[0].split("\n", 1)[1]  # the matmul block, after its '# matmul' line
    table = pd.read_csv(io.StringIO(first))
    assert list(table.columns[:2]) == ["shape", "format"] and all(c.startswith("ms ") for c in table.columns[2:])
    assert {"ms triton", "ms bnb_nf4", "ms tinygemm"} <= set(table.columns)
    every = show("--columns", "all", "--format", "csv")
    assert "host us triton" in every.stdout and "triton vs gemlite" in every.stdout


def test_markdown_is_a_table_per_op_and_a_wrong_column_is_bad_input():
    md = show("--format", "markdown")
    assert md.returncode == 0 and "## matmul" in md.stdout and "## matmul_w8a8" in md.stdout
    assert "| shape |" in md.stdout
    bad = show("--columns", "shape,speed")
    assert bad.returncode == 2 and "--columns: 'speed' names no column" in bad.stderr
