"""A run's tables in the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(console: Console, title: str, table) -> None:
    from ..analysis.tables import fmt
    t = Table(title=title, title_justify="left")
    for col in table.columns:
        t.add_column(str(col), justify="right" if table[col].dtype.kind in "fiu" else "left")
    for row in table.itertuples(index=False):
        t.add_row(*(fmt(v) for v in row))
    console.print(t)


def show_run(path, console: Console) -> None:
    from ..results import load_run
    from ..analysis.tables import depth_table, failures, op_table
    df, meta = load_run(path)
    env = meta.get("env", {})
    console.print(f"[bold]{meta.get('run_id', path)}[/bold]  GPU: {env.get('gpu')}  torch {env.get('torch')}  "
                  f"triton {env.get('triton')}  rows: {len(df)}")
    if len(df) and not df["timing_valid"].astype(bool).all():
        console.print("[yellow]Timings were taken on Triton's CPU interpreter: not GPU timings.[/yellow]")
    copy_gbps = meta.get("calibration", {}).get("copy_gbps")
    if copy_gbps:
        console.print(f"device-to-device copy: {copy_gbps:.0f} GB/s")
    for op in df["op"].unique():
        table = op_table(df, op, copy_gbps)
        if not table.empty:
            print_table(console, op, table)
    depth = depth_table(df)
    if not depth.empty:
        print_table(console, "stack: error by depth", depth)
    bad = failures(df)
    if not bad.empty:
        print_table(console, "not ok", bad)


def show_new_run(path, console: Console) -> None:
    """The tables of a run folder a command just wrote, and where it is."""
    show_run(path, console)
    console.print(f"results: {path}")
