"""`quantbench show` in a terminal of 100 columns and for scripts: the compact default fits, every
column is there on request, and csv and markdown are plain tables."""

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "h200" / "peers-20261203T190008Z"  # ten implementations, two dtypes, NF4 and fp8 rows


def show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "show", str(RUN), *args],
                          capture_output=True, text=True)


def test_the_compact_default_fits_100_columns_without_cutting_a_value():
    from rich.console import Console

    from quantbench.harness.cli.rendering import show_run
    console = Console(width=100, file=io.StringIO(), force_terminal=False)
    show_run(RUN, console)
    text = console.file.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in text  # nothing cut short
    # one line per case: the first matmul case is on one line with its time and speedups
    row = next(line for line in lines if line.startswith("o_proj M=1 8192x8192") and "int4 asym g128" in line)
    assert "gemv" in row and len(row.split()) >= 8
    assert "--columns all" in text


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


def test_a_run_of_schema_1_reads_and_a_foreign_record_is_named(tmp_path):
    """rows.jsonl of schema 1 held one row a line, with no case records: `show` reads it (the
    committed stack run is one); a line that is neither a case nor a row is a clear error, exit 2."""
    old = ROOT / "results" / "h200" / "stack-20261123T203258Z"
    shown = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "show", str(old)],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "stack" in shown.stdout
    import shutil
    damaged = tmp_path / "run"
    shutil.copytree(old, damaged)
    (damaged / "rows.jsonl").write_text('{"hello": 1}\n')
    (damaged / "results.csv").unlink()
    bad = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "show", str(damaged)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "rows.jsonl:1: neither a case record" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_bar_or_a_newline_in_a_cell_keeps_a_markdown_table_whole():
    """An error message holding `|` added a column to its row in show --format markdown, report.md
    and summary.md; a newline ended the row."""
    import pandas as pd

    from quantbench.harness.analysis.tables import to_markdown
    lines = to_markdown(pd.DataFrame({"impl": ["plugin"], "message": ["ValueError: bad | value\nsecond line"]}))
    lines = lines.splitlines()
    assert len(lines) == 3 and all(line.count(" | ") == 1 for line in lines[::2])
    assert lines[2] == "| plugin | ValueError: bad \\| value second line |"
