"""The `quantbench` command: run, validate, list, show, compare, compare-gpus, merge, fit, report,
and conversion to and from pytest-benchmark JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Literal, get_args, get_origin

from rich.console import Console
from rich.table import Table

from .config import AXES, ConfigError, RunConfig, Sweep, load_config
from .merge import MergeError
from .results import RunFolderError

EXIT_CONFIG = 2


def _print_table(console: Console, title: str, table) -> None:
    from .summary import fmt
    t = Table(title=title, title_justify="left")
    for col in table.columns:
        t.add_column(str(col), justify="right" if table[col].dtype.kind in "fiu" else "left")
    for row in table.itertuples(index=False):
        t.add_row(*(fmt(v) for v in row))
    console.print(t)


def show_run(path, console: Console) -> None:
    from .results import load_run
    from .summary import depth_table, failures, op_table
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
            _print_table(console, op, table)
    depth = depth_table(df)
    if not depth.empty:
        _print_table(console, "stack: error by depth", depth)
    bad = failures(df)
    if not bad.empty:
        _print_table(console, "not ok", bad)


def _show_new_run(path, console: Console) -> None:
    """The tables of a run folder a command just wrote, and where it is."""
    show_run(path, console)
    console.print(f"results: {path}")


def cmd_run(args, console: Console) -> int:
    from .runner import run_sweep
    cfg = load_config(args.config)
    writer = run_sweep(cfg, args.out, args.device, show_progress=not args.no_progress, resume=args.resume,
                       shard=_shard(args.shard))
    _show_new_run(writer.path, console)
    if writer.meta.get("stopped_early"):
        console.print(f"stopped early: continue with  quantbench run {args.config} --resume {writer.path}")
        return 130
    return 0


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected I/N such as 1/4, got {text!r}") from None
    return index, count


def cmd_merge(args, console: Console) -> int:
    from .merge import merge_runs
    _show_new_run(merge_runs(args.runs, args.out), console)
    return 0


def cmd_validate(args, console: Console) -> int:
    from .cases import expand
    cfg = load_config(args.config)
    cases = expand(cfg)
    ops = ", ".join(dict.fromkeys(c.op for c in cases))
    console.print(f"{args.config}: ok, {len(cases)} cases ({ops})")
    return 0


def cmd_list(args, console: Console) -> int:
    from .ops import OPS
    from .registry import load_registry
    registry = load_registry(args.plugin or ())
    t = Table(title="ops", title_justify="left")
    for col in ("op", "axes", "about"):
        t.add_column(col)
    for op in OPS.values():
        t.add_row(op.name, ", ".join(a for a in AXES if a in op.axes), (op.__doc__ or "").strip().splitlines()[0])
    console.print(t)
    t = Table(title="implementations", title_justify="left")
    for col in ("op", "impl", "role", "needs", "from", "about"):
        t.add_column(col)
    for impl in registry.impls:
        needs = [*(["CUDA"] if impl.needs.cuda else []), *impl.needs.packages,
                 *([f"sm_{impl.needs.min_capability[0]}{impl.needs.min_capability[1]}"] if impl.needs.min_capability else [])]
        about = impl.description + (" (own weight format)" if impl.own_format else "")
        t.add_row(impl.op, impl.name, impl.role.value, ", ".join(needs) or "-", impl.origin, about)
    console.print(t)
    t = Table(title="sweep axes", title_justify="left")
    t.add_column("axis")
    t.add_column("values")
    for name, field in Sweep.model_fields.items():
        if name == "impl":
            t.add_row(name, "names from the implementations table (an op takes the ones it has)")
            continue
        t.add_row(name, "list of {name, N, K}" if name == "shapes" else _allowed(field.annotation))
    t.add_row("dtype (top level)", _allowed(RunConfig.model_fields["dtype"].annotation))
    console.print(t)
    return 0


def _allowed(annotation) -> str:
    """The literal values a config field accepts, for `quantbench list`."""
    found: list[str] = []

    def walk(a) -> None:
        if get_origin(a) is Literal:
            found.extend(map(str, get_args(a)))
        for x in get_args(a):
            walk(x)

    walk(annotation)
    return ", ".join(found) or "positive integers"


def cmd_show(args, console: Console) -> int:
    show_run(args.run, console)
    return 0


def _thresholds(args):
    """The thresholds file (or the built-in defaults), with any flag given on the command line
    put over every op's value."""
    from .thresholds import ThresholdSet, load_thresholds
    base = load_thresholds(args.thresholds) if args.thresholds else ThresholdSet()
    flags = {k: v for k, v in (("alpha", args.alpha), ("min_effect", args.min_effect),
                               ("snr_tolerance_db", args.snr_tolerance_db)) if v is not None}
    allowed = {"alpha": ("in (0, 1)", lambda v: 0 < v < 1), "min_effect": ("in [0, 1)", lambda v: 0 <= v < 1),
               "snr_tolerance_db": ("of at least 0", lambda v: v >= 0)}
    for name, value in flags.items():
        what, ok = allowed[name]
        if not ok(value):
            raise ConfigError(f"--{name.replace('_', '-')}: expected a value {what}, got {value}")
    return base.overridden(**flags)


def cmd_compare(args, console: Console) -> int:
    from pathlib import Path

    from .compare import compare_all, write_report
    runs = [args.base, *args.candidates]
    views = compare_all(runs, _thresholds(args))
    out = Path(args.out or Path(runs[-1]) / "compare")
    verdict = write_report(views, out)
    console.print(", ".join(f"{k}: {v}" for k, v in verdict["counts"].items()))
    versus = views.versus
    changed = versus[versus["verdict"] != "same"]
    if not changed.empty:
        cols = [c for c in ("candidate", "op", "impl", "bits", "granularity", "M", "N", "K", "base_ms", "cand_ms",
                            "ratio", "latency", "accuracy", "verdict") if c in changed
                and (c != "candidate" or len(args.candidates) > 1)]
        _print_table(console, "changed", changed[cols])
    if views.gpus is not None:
        _print_table(console, "GPU against GPU", views.gpus)
    for note in views.notes:
        console.print(note)
    written = ["compare.md", "compare.csv", "verdict.json"] + [f for f in ("gpus.csv", "unshared.csv", "impls.csv")
                                                                 if (out / f).exists()]
    console.print(f"written under {out}: {', '.join(written)}")
    failing = verdict["counts"].get(args.fail_on, 0) if args.fail_on else 0
    return 1 if failing else 0


def cmd_compare_gpus(args, console: Console) -> int:
    from pathlib import Path

    from .compare import gpu_views
    from .summary import to_markdown
    table, unshared = gpu_views(args.runs)
    _print_table(console, "GPU against GPU", table)
    if not unshared.empty:
        _print_table(console, "not in every run (left out above)", unshared)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "gpus.csv", index=False)
        unshared.to_csv(out / "unshared.csv", index=False)
        text = "# GPU against GPU\n\n" + to_markdown(table) + "\n"
        if not unshared.empty:
            text += "\nCases not in every run (left out above):\n\n" + to_markdown(unshared) + "\n"
        (out / "gpus.md").write_text(text)
        console.print(f"written: {out}/gpus.md, gpus.csv, unshared.csv")
    return 0


def cmd_to_pytest_benchmark(args, console: Console) -> int:
    import json

    from .pytest_benchmark_json import to_pytest_benchmark
    text = json.dumps(to_pytest_benchmark(args.run), indent=2, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        console.print(f"written: {args.out}")
    else:
        print(text)
    return 0


def cmd_from_pytest_benchmark(args, console: Console) -> int:
    from .pytest_benchmark_json import from_pytest_benchmark
    _show_new_run(from_pytest_benchmark(args.json, args.out), console)
    return 0


def cmd_fit(args, console: Console) -> int:
    from .fit import GPUS, fit, gpu_memory, parse_memory
    try:
        gib = parse_memory(args.gpu_mem) if args.gpu_mem else gpu_memory(args.gpu)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not 0 <= args.headroom < 1:
        raise ConfigError(f"--headroom: expected a fraction in [0, 1), got {args.headroom}")
    rows, best = fit(args.params, gib, args.headroom, args.group_size)
    where = f"{args.gpu} ({gib:.1f} GiB)" if args.gpu else f"{gib:g} GiB"
    console.print(f"{args.params:.3g} parameters on {where}; {args.headroom:.0%} kept for activations, KV cache "
                  f"and the runtime leaves {gib * (1 - args.headroom):.1f} GiB for the weights.")
    t = Table()
    for col in ("precision", "bytes/param", "weights GiB", "codes alone GiB", "fits"):
        t.add_column(col, justify="left" if col == "precision" else "right")
    for r in rows:
        t.add_row(r.precision.name, f"{r.precision.bytes_per_param:.5g}", f"{r.weights_gib:.1f}",
                  f"{args.params * r.precision.code_bytes_per_param / (1 << 30):.1f}", "yes" if r.fits else "no")
    console.print(t)
    console.print("bytes/param and weights count codes + one fp16 scale and zero per group; 'codes alone' is "
                  "the seed notebook's figure, which leaves them out.")
    if best is None:
        console.print(f"Nothing fits: even {rows[-1].precision.name} needs {rows[-1].weights_gib:.1f} GiB. "
                      f"Use a GPU with more memory, several GPUs, or offloading.")
    else:
        console.print(f"Recommendation: {best.precision.name}, the most precise format whose weights "
                      f"({best.weights_gib:.1f} GiB) fit with the headroom kept.")
    if args.gpu is None and args.gpu_mem is None:
        console.print(f"known GPUs: {', '.join(GPUS)}")
    return 0


def cmd_report(args, console: Console) -> int:
    from .report import ReportError, write_report
    try:
        out = write_report(args.runs, args.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    console.print(f"written: {out}/report.html, report.md and the PNGs they show")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quantbench", description="Benchmark Triton quantization kernels "
                                "against PyTorch: latency, memory and error on one table.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a sweep and write a results folder")
    r.add_argument("config", help="YAML config (see configs/)")
    r.add_argument("--out", default="results", help="folder to create the run folder in (default: results)")
    r.add_argument("--device", default=None, help="override the config's device: auto, cpu, cuda, cuda:N")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--shard", metavar="I/N", default=None,
                   help="run only shard I of N (1-based): a deterministic split by workload, for CI matrices")
    r.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run folder RUN (made with the same config), skipping its finished cases")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="check a config and count its cases, running nothing")
    v.add_argument("config")
    v.set_defaults(func=cmd_validate)
    ls = sub.add_parser("list", help="ops, implementations (with their roles and origin) and sweep axes")
    ls.add_argument("--plugin", action="append", metavar="MODULE",
                    help="also load this plugin module (as a config's `plugins:` does); repeatable")
    ls.set_defaults(func=cmd_list)
    mg = sub.add_parser("merge", help="join run folders (shards, machines) into one")
    mg.add_argument("runs", nargs="+", help="run folders of one config and schema")
    mg.add_argument("--out", default="results", help="folder to create the merged run folder in")
    mg.set_defaults(func=cmd_merge)
    c = sub.add_parser("compare", help="candidates against a baseline case by case, GPU against GPU, "
                                       "implementation against implementation")
    c.add_argument("base", help="baseline run folder")
    c.add_argument("candidates", nargs="+", help="candidate run folder(s): same GPU for regression verdicts, "
                                                 "other GPUs for the GPU-against-GPU table")
    c.add_argument("--out", default=None, help="where to write compare.md, compare.csv, verdict.json, impls.csv "
                                               "(and gpus.csv, unshared.csv) (default: LAST_CANDIDATE/compare)")
    c.add_argument("--fail-on", choices=("regression",), default=None, help="exit 1 if any case has this verdict")
    c.add_argument("--thresholds", default=None, help="YAML file of thresholds per op and metric "
                                                      "(configs/thresholds.yaml holds the defaults)")
    c.add_argument("--alpha", type=float, default=None, help="Mann-Whitney U significance level, for every op "
                                                             "(default 0.002)")
    c.add_argument("--min-effect", type=float, default=None, help="smallest change of the median that counts, for "
                                                                  "every op (default 0.07 = 7%%)")
    c.add_argument("--snr-tolerance-db", type=float, default=None, help="largest SNR drop that is not a "
                                                                        "regression, for every op (default 0.5 dB)")
    c.set_defaults(func=cmd_compare)
    g = sub.add_parser("compare-gpus", help="the same cases on several GPUs, side by side")
    g.add_argument("runs", nargs="+", help="run folders of the same config on different GPUs")
    g.add_argument("--out", default=None, help="also write gpus.md, gpus.csv and unshared.csv there")
    g.set_defaults(func=cmd_compare_gpus)
    tp = sub.add_parser("to-pytest-benchmark", help="a run folder as pytest-benchmark JSON")
    tp.add_argument("run")
    tp.add_argument("--out", default=None, help="file to write (default: standard output)")
    tp.set_defaults(func=cmd_to_pytest_benchmark)
    fp = sub.add_parser("from-pytest-benchmark", help="pytest-benchmark JSON as a run folder")
    fp.add_argument("json")
    fp.add_argument("--out", default="results", help="folder to create the run folder in")
    fp.set_defaults(func=cmd_from_pytest_benchmark)
    ft = sub.add_parser("fit", help="which precision lets a model fit a GPU")
    ft.add_argument("--params", type=float, required=True, help="number of parameters, e.g. 7e9")
    where = ft.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu-mem", help="GPU memory, e.g. 8GiB or 24GB (taken as GiB)")
    where.add_argument("--gpu", help="a GPU by name, e.g. 'RTX 4090' (see the table in harness/fit.py)")
    ft.add_argument("--headroom", type=float, default=0.2,
                    help="fraction of the GPU kept for activations, KV cache and the runtime (default 0.2)")
    ft.add_argument("--group-size", type=int, default=128, choices=(32, 64, 128, 256),
                    help="group size of the int formats (one fp16 scale and zero per group)")
    ft.set_defaults(func=cmd_fit)
    rp = sub.add_parser("report", help="plots and an HTML/Markdown report of one or more runs")
    rp.add_argument("runs", nargs="+", help="run folders (several: also GPU against GPU)")
    rp.add_argument("--out", default=None, help="folder to write report.html, report.md and the PNGs in "
                                                "(default: the run folder; required for several runs)")
    rp.set_defaults(func=cmd_report)
    s = sub.add_parser("show", help="print the tables of a run folder")
    s.add_argument("run")
    s.set_defaults(func=cmd_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or logged: do not squeeze tables into 80 columns
    try:
        return args.func(args, console)
    except ConfigError as e:  # plain text, unwrapped: one message per line, greppable in CI logs
        print(f"config error:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    except (FileNotFoundError, RunFolderError, MergeError) as e:  # a missing, damaged or mismatched run folder
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
