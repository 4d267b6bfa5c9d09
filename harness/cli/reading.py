"""The commands that read run folders: show, compare, compare-gpus, report; and fit, which reads
nothing but the planner's table."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.table import Table

from ..config.errors import EXIT_BAD_INPUT, ConfigError
from .rendering import print_table, show_run


def cmd_show(args, console: Console) -> int:
    show_run(args.run, console, args.columns, args.format)
    return 0


def _thresholds(args):
    """The thresholds file (or the built-in defaults), with any flag given on the command line
    put over every op's value."""
    from ..analysis.thresholds import ThresholdSet, load_thresholds
    base = load_thresholds(args.thresholds) if args.thresholds else ThresholdSet()
    flags = {k: v for k, v in (("alpha", args.alpha), ("min_effect", args.min_effect),
                               ("snr_tolerance_db", args.snr_tolerance_db)) if v is not None}
    allowed = {"alpha": ("in (0, 1)", lambda v: 0 < v < 1), "min_effect": ("in [0, 1)", lambda v: 0 <= v < 1),
               "snr_tolerance_db": ("of at least 0, finite", lambda v: 0 <= v < math.inf)}  # inf: never fails
    for name, value in flags.items():
        what, ok = allowed[name]
        if not ok(value):
            raise ConfigError(f"--{name.replace('_', '-')}: expected a value {what}, got {value}")
    return base.overridden(**flags)


def cmd_compare(args, console: Console) -> int:
    from pathlib import Path

    from ..analysis.compare import compare_all, write_report
    from ..results.storage import writable_folder
    runs = [args.base, *args.candidates]
    views = compare_all(runs, _thresholds(args), args.mode)
    out = writable_folder(Path(args.out or Path(runs[-1]) / "compare"))
    verdict = write_report(views, out)
    console.print(f"{args.mode} latency: " + ", ".join(f"{k}: {v}" for k, v in verdict["counts"].items()))
    versus = views.versus
    changed = versus[versus["verdict"] != "same"]
    if not changed.empty:
        cols = [c for c in ("candidate", "op", "impl", "bits", "granularity", "M", "N", "K", "depth", "base_ms",
                            "cand_ms", "ratio", "latency", "accuracy", "verdict") if c in changed
                and (c != "candidate" or len(args.candidates) > 1) and (c != "depth" or changed[c].notna().any())]
        print_table(console, "changed", changed[cols])
    if views.gpus is not None:
        print_table(console, "GPU against GPU", views.gpus)
    for note in views.notes:
        console.print(note)
    written = ["compare.md", "compare.csv", "verdict.json"] + [f for f in ("gpus.csv", "unshared.csv", "impls.csv")
                                                                 if (out / f).exists()]
    console.print(f"written under {out}: {', '.join(written)}")
    unjudged = verdict["counts"].get("unjudged", 0)
    if unjudged:
        console.print(f"latency not judged for {unjudged} case(s): interpreter timings, no raw samples, samples "
                      f"that are not numbers, or two GPU models (verdict.json's `unjudged` lists them)")
    missing = verdict["counts"].get("missing", 0)
    if missing:
        console.print(f"{missing} case(s) of the baseline are missing from a candidate (compare.md lists them)")
    failing = sum(verdict["counts"].get(v, 0) for v in args.fail_on or ())
    return 1 if failing else 0


def cmd_compare_gpus(args, console: Console) -> int:
    from pathlib import Path

    from ..analysis.gpu_views import gpu_views
    from ..analysis.tables import to_markdown
    from ..results.storage import writable_folder
    out = writable_folder(Path(args.out)) if args.out else None  # refused before the tables, not after
    table, unshared = gpu_views(args.runs)
    print_table(console, "GPU against GPU", table)
    if not unshared.empty:
        print_table(console, "not in every run (left out above)", unshared)
    if out is not None:
        table.to_csv(out / "gpus.csv", index=False)
        unshared.to_csv(out / "unshared.csv", index=False)
        text = "# GPU against GPU\n\n" + to_markdown(table) + "\n"
        if not unshared.empty:
            text += "\nCases not in every run (left out above):\n\n" + to_markdown(unshared) + "\n"
        (out / "gpus.md").write_text(text)
        console.print(f"written: {out}/gpus.md, gpus.csv, unshared.csv")
    return 0


def gib_text(gib: float) -> str:
    """GiB with one decimal, or in powers of ten past a million (--params 1e300 is a number too)."""
    return f"{gib:.1f}" if gib < 1e6 else f"{gib:.3g}"


def cmd_fit(args, console: Console) -> int:
    from ..analysis.memory_planner import GPUS, fit, gpu_memory, parse_memory
    try:
        gib = parse_memory(args.gpu_mem) if args.gpu_mem is not None else gpu_memory(args.gpu)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not 0 <= args.headroom < 1:
        raise ConfigError(f"--headroom: expected a fraction in [0, 1), got {args.headroom}")
    if not (math.isfinite(args.params) and args.params >= 1):
        raise ConfigError(f"--params: expected a positive number of parameters such as 7e9, got {args.params:g}")
    if not (math.isfinite(gib) and gib > 0):
        raise ConfigError(f"--gpu-mem: expected a positive size such as 8GiB, got {args.gpu_mem!r}")
    rows, best = fit(args.params, gib, args.headroom, args.group_size)
    where = f"{args.gpu} ({gib_text(gib)} GiB)" if args.gpu else f"{gib:g} GiB"
    console.print(f"{args.params:.3g} parameters on {where}; {args.headroom:.0%} kept for activations, KV cache "
                  f"and the runtime leaves {gib_text(gib * (1 - args.headroom))} GiB for the weights.")
    t = Table()
    for col in ("precision", "bytes/param", "weights GiB", "codes alone GiB", "fits"):
        t.add_column(col, justify="left" if col == "precision" else "right")
    for r in rows:
        t.add_row(r.precision.name, f"{r.precision.bytes_per_param:.5g}", gib_text(r.weights_gib),
                  gib_text(args.params * r.precision.code_bytes_per_param / (1 << 30)), "yes" if r.fits else "no")
    console.print(t)
    console.print("bytes/param and weights count codes + one fp16 scale and zero per group; 'codes alone' is "
                  "the seed notebook's figure, which leaves them out.")
    if best is None:
        console.print(f"Nothing fits: even {rows[-1].precision.name} needs {gib_text(rows[-1].weights_gib)} GiB. "
                      f"Use a GPU with more memory, several GPUs, or offloading.")
    else:
        console.print(f"Recommendation: {best.precision.name}, the most precise format whose weights "
                      f"({gib_text(best.weights_gib)} GiB) fit with the headroom kept.")
    if args.gpu is None and args.gpu_mem is None:
        console.print(f"known GPUs: {', '.join(GPUS)}")
    return 0


def cmd_report(args, console: Console) -> int:
    from ..reporting.report import ReportError, write_report
    try:
        out = write_report(args.runs, args.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    console.print(f"written: {out}/report.html, report.md and the PNGs they show")
    return 0
