"""The `quantbench` command: run, validate, configs, list, show, compare, compare-gpus, merge, fit, report,
and conversion to and from pytest-benchmark JSON. Each command is a function of its parsed
arguments (running.py makes runs, reading.py reads them); this module parses and maps errors to
exit codes."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from ..config.errors import EXIT_BAD_INPUT, ConfigError
from ..results import RunFolderError
from ..results.merge import MergeError
from .reading import cmd_compare, cmd_compare_gpus, cmd_fit, cmd_report, cmd_show
from .running import (MissingPackage, cmd_configs, cmd_from_pytest_benchmark, cmd_list, cmd_merge, cmd_run,
                      cmd_to_pytest_benchmark, cmd_validate)

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quantbench", description="Benchmark Triton quantization kernels "
                                "against PyTorch: latency, memory and error on one table.")
    p.add_argument("--debug", action="store_true", default=bool(os.environ.get("QUANTBENCH_DEBUG")),
                   help="show the traceback of a handled error (bad input, a damaged file) too "
                        "(or set QUANTBENCH_DEBUG=1)")
    p.add_argument("--version", action="version", version=f"quantbench {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a sweep and write a results folder")
    r.add_argument("config", help="YAML config file, or the name of a shipped one (`quantbench configs`)")
    r.add_argument("--out", default="results", help="folder to create the run folder in (default: results)")
    r.add_argument("--device", default=None, help="override the config's device: auto, cpu, cuda, cuda:N")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--shard", metavar="I/N", default=None,
                   help="run only shard I of N (1-based): a deterministic split by workload, for CI matrices")
    r.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run folder RUN (made with the same config), skipping its finished cases")
    r.add_argument("--workers", metavar="N", type=int, nargs="?", const="all", default=None,
                   help="run on a local Dask cluster of N workers, one workload at a time each: one per GPU "
                        "(default: every GPU), or N interpreter processes on a machine without one "
                        "(needs quantbench[cluster])")
    r.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:port); see README")
    r.add_argument("--allow-mixed", action="store_true",
                   help="with --workers/--scheduler: allow workers with different GPU models in one run")
    r.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a case's row is error, oom or timeout (as asv run --strict)")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="check a config and count its cases, running nothing")
    v.add_argument("config")
    v.set_defaults(func=cmd_validate)
    cf = sub.add_parser("configs", help="the example configs shipped with quantbench (run them by name)")
    cf.add_argument("--copy", metavar="DIR", default=None, help="copy them into DIR to edit")
    cf.set_defaults(func=cmd_configs)
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
    c.add_argument("--fail-on", choices=("regression", "unjudged", "missing"), action="append", default=None,
                   help="exit 1 if any case has this verdict (repeatable; unjudged: a latency that could not be "
                        "judged, e.g. a run without its samples; missing: a baseline case the candidate lacks)")
    c.add_argument("--mode", choices=("absolute", "relative"), default="absolute",
                   help="absolute: latency as measured (one machine); relative: each case over its anchor in its "
                        "own run, the dense baseline or else the PyTorch reference (runs from two machines)")
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
    where.add_argument("--gpu", help="a GPU by name, e.g. 'RTX 4090' (see the table in harness/analysis/memory_planner.py)")
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
    s.add_argument("--columns", default=None,
                   help="'all', or comma-separated names and globs, e.g. 'shape,format,ms *,triton vs *' "
                        "(default: the case, each candidate's time and speedup over the reference and the "
                        "baseline, its path, bits and error)")
    s.add_argument("--format", choices=("table", "markdown", "csv"), default="table",
                   help="table (the terminal), markdown or csv (for scripts)")
    s.set_defaults(func=cmd_show)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("quantbench")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or logged: do not squeeze tables into 80 columns
    try:
        return args.func(args, console)
    except ConfigError as e:  # plain text, unwrapped: one message per line, greppable in CI logs
        if args.debug:
            raise
        print(f"config error:\n{e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RunFolderError, MergeError, OSError, MissingPackage) as e:  # a damaged file or folder, a missing package
        if args.debug:
            raise
        print(f"error: {_plain(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _plain(e: BaseException) -> str:
    """An error as one line for the user: ours carry their own words; the OS's get the path it
    names and its reason (PermissionError: [Errno 13] ... becomes 'PATH: Permission denied')."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e)
