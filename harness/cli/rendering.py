"""A run's tables in the terminal (rich)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..config import ConfigError


def print_table(console: Console, title: str, table) -> None:
    """A table as rich draws it, with light rules and one space between columns, so that the
    compact columns of `show` fit 100 characters. A number is never cut (its column is as wide as
    its longest value); a label or a header may wrap onto a second line."""
    from ..analysis.tables import fmt
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    cells = [[fmt(v) for v in row] for row in table.itertuples(index=False)]
    for i, col in enumerate(table.columns):
        if table[col].dtype.kind in "fiu":
            widest = max((len(row[i]) for row in cells), default=1)
            # one word of the header per line: the column is as wide as its numbers or its longest word
            t.add_column(str(col).replace(" ", "\n"), justify="right", no_wrap=True, min_width=widest)
        else:  # wraps between words, never inside one (unless a word alone is wider than a third of the screen)
            word = max((len(w) for row in cells for w in row[i].split()), default=1)
            t.add_column(str(col), justify="left", overflow="fold", min_width=min(word, console.width // 3))
    for row in cells:
        t.add_row(*row)
    console.print(t)


def show_run(path, console: Console, columns: str | None = None, form: str = "table") -> None:
    """A run's tables: one per op, the fastest by M where the run has peers (analysis.choice), the
    stack's error by depth, the rows that are not ok.

    columns: None for the compact default (analysis.tables.compact_columns), "all", or
    comma-separated names and globs ('shape,format,ms *'); a pattern no table has is a ConfigError.
    form: "table" (rich, for a terminal), "markdown" or "csv" (for scripts: one block per table,
    headed by its title)."""
    from ..analysis.choice import SUMMARY_COLUMNS as CHOICE_SUMMARY, choice_tables
    from ..analysis.tables import compact_columns, depth_table, failures, op_table, select_columns
    from ..results import load_run
    patterns = None if columns in (None, "all") else [p.strip() for p in columns.split(",") if p.strip()]
    if patterns == []:
        raise ConfigError(f"--columns: expected 'all' or comma-separated column names and globs, got {columns!r}")
    df, meta = load_run(path)
    env = meta.get("env", {})
    ops = df["op"].unique()
    # (title, table, its compact columns): per op its cases, then which implementation to pick by M
    # where the run has peers (the choice's compact form: the fastest, without every implementation)
    tables = [(op, t, compact_columns(t, df[df["op"] == op]))
              for op in ops if not (t := op_table(df, op, meta.get("calibration", {}).get("copy_gbps"))).empty]
    tables += [(title, t, list(t.columns[:CHOICE_SUMMARY])) for op in ops for title, t in choice_tables(df, op)]
    matched: set[str] = set()
    for i, (title, t, compact) in enumerate(tables):
        if patterns is not None:
            t, hit = select_columns(t, patterns)
            matched |= hit
        elif columns is None:
            t = t[compact]
        tables[i] = (title, t, compact)
    if patterns is not None and (missing := [p for p in patterns if p not in matched]):
        raise ConfigError(f"--columns: {', '.join(map(repr, missing))} names no column of this run's tables "
                          f"(use 'all' to see them, or globs such as 'ms *')")
    tables = [(title, t) for title, t, _ in tables if len(t.columns)]
    depth, bad = depth_table(df), failures(df)
    tables += [(title, t) for title, t in (("stack: error by depth", depth), ("not ok", bad)) if not t.empty]
    if form != "table":
        from ..analysis.tables import to_markdown
        for title, t in tables:
            console.print(f"## {title}\n\n{to_markdown(t)}\n" if form == "markdown" else f"# {title}\n{t.to_csv(index=False)}",
                          markup=False, highlight=False, soft_wrap=True)
        return
    console.print(f"[bold]{meta.get('run_id', path)}[/bold]  GPU: {env.get('gpu')}  torch {env.get('torch')}  "
                  f"triton {env.get('triton')}  rows: {len(df)}")
    if len(df) and not df["timing_valid"].astype(bool).all():
        console.print("[yellow]Timings were taken on Triton's CPU interpreter: not GPU timings.[/yellow]")
    copy_gbps = meta.get("calibration", {}).get("copy_gbps")
    if copy_gbps:
        console.print(f"device-to-device copy: {copy_gbps:.0f} GB/s")
    for title, t in tables:
        print_table(console, title, t)
    if columns is None:
        console.print("(the compact columns: `quantbench show RUN --columns all` for every one)")


def show_new_run(path, console: Console) -> None:
    """The tables of a run folder a command just wrote, and where it is."""
    show_run(path, console)
    console.print(f"results: {path}")
