"""The commands that make run folders or say what a run would do: run, validate, list, merge, and
the conversions to and from pytest-benchmark JSON."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args, get_origin

from rich.console import Console
from rich.table import Table

from ..config import AXES, ConfigError, RunConfig, Sweep, load_config, shipped_configs
from ..config.loading import locate
from ..config.schema import DEVICE_PATTERN
from ..results.contents import MAX_SHARDS
from ..results.storage import RunFolderError, atomic_write, writable_folder
from .rendering import show_new_run


def cmd_run(args, console: Console) -> int:
    from ..execution.sweep import run_sweep
    cfg = load_config(args.config)
    writable_folder(args.out)  # refused before the GPU is calibrated, not after
    on_cluster = args.workers is not None or args.scheduler is not None
    if on_cluster and args.shard is not None:
        raise ConfigError("--shard splits a sweep by hand; --workers/--scheduler spread it over a cluster: use one")
    if args.workers not in (None, "all") and args.workers < 1:  # --workers alone: "all" (argparse's const)
        raise ConfigError(f"--workers: expected a number of workers >= 1 (or none: every GPU), got {args.workers}")
    if args.device is not None and not re.match(DEVICE_PATTERN, args.device):  # "" was read as no --device
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got {args.device!r}")
    if args.allow_mixed and not on_cluster:
        raise ConfigError("--allow-mixed: applies to a run on a cluster (--workers or --scheduler) only")
    try:
        if on_cluster:
            from ..execution.cluster import run_on_cluster
            writer = run_on_cluster(cfg, args.out, args.device, not args.no_progress, args.resume,
                                    None if args.workers == "all" else args.workers, args.scheduler,
                                    args.allow_mixed)
        else:
            writer = run_sweep(cfg, args.out, args.device, show_progress=not args.no_progress, resume=args.resume,
                               shard=_shard(args.shard))
    except ConfigError as e:  # found while expanding the sweep: the file and line go in front
        raise locate(args.config, e) from None
    show_new_run(writer.path, console)
    if writer.meta.get("stopped_early"):
        console.print(f"stopped early: continue with  quantbench run {args.config} --resume {writer.path}")
        return 130
    # the sweep goes on past a failing case (its row says why); the run says how many there were,
    # and --strict makes them the exit status, as asv's run --strict does
    failed = {status: n for status, n in writer.meta.get("status_counts", {}).items() if status not in ("ok", "skipped")}
    if failed:
        console.print(f"{sum(failed.values())} rows did not pass ("
                      + ", ".join(f"{status}: {n}" for status, n in sorted(failed.items()))
                      + "): results.csv's message column says why")
        return 1 if args.strict else 0
    return 0


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected I/N such as 1/4, got {text!r}") from None
    if not text.isascii() or not 1 <= index <= count <= MAX_SHARDS:  # merge lists every shard a run lacks
        raise ConfigError(f"--shard: expected I/N with 1 <= I <= N <= {MAX_SHARDS} (ASCII digits), got {text!r}")
    return index, count


def cmd_merge(args, console: Console) -> int:
    from ..analysis.tables import summary_markdown
    from ..results.merge import merge_runs
    writable_folder(args.out)
    show_new_run(merge_runs(args.runs, args.out, summary_markdown), console)
    return 0


def cmd_validate(args, console: Console) -> int:
    from ..execution.cases import expand
    cfg = load_config(args.config)
    try:
        cases = expand(cfg)
    except ConfigError as e:
        raise locate(args.config, e) from None
    ops = ", ".join(dict.fromkeys(c.op for c in cases))
    console.print(f"{args.config}: ok, {len(cases)} cases ({ops})")
    return 0


def cmd_configs(args, console: Console) -> int:
    """The shipped example configs: name, what each sweeps (its first comment line), where it is;
    with --copy DIR, copied there to edit."""
    found = shipped_configs()
    if args.copy:
        out = writable_folder(Path(args.copy), "--copy")
        existing = [out / path.name for path in found.values() if (out / path.name).exists()]
        if existing:  # before any is written: a refused copy leaves DIR as it was
            raise ConfigError(f"--copy: {existing[0]} exists; not overwritten")
        for path in found.values():
            (out / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        console.print(f"copied {len(found)} configs to {out}")
        return 0
    # thresholds.yaml is shipped beside the sweeps, for compare, not run
    t = Table(title="shipped configs (`quantbench run NAME`; thresholds: `quantbench compare --thresholds`)",
              title_justify="left")
    for col in ("name", "about", "file"):
        t.add_column(col)
    for name, path in found.items():
        first = next((line.lstrip("# ").strip() for line in path.read_text(encoding="utf-8").splitlines()
                      if line.startswith("#")), "")
        t.add_row(name, first, str(path))
    console.print(t)
    return 0


def cmd_list(args, console: Console) -> int:
    from ..ops import OPS
    from ..registry import load_registry
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


class MissingPackage(Exception):
    """An optional package a command needs is not installed; the message says which and how."""


def _conversions(command: str):
    """harness.results.pytest_benchmark, which needs the optional package pytest-benchmark."""
    try:
        from ..results import pytest_benchmark
    except ImportError as e:
        if (e.name or "").split(".")[0] != "pytest_benchmark":
            raise
        raise MissingPackage(f"{command} needs the optional package pytest-benchmark, which is not installed: "
                             f"pip install pytest-benchmark (or quantbench[test])") from None
    return pytest_benchmark


def cmd_to_pytest_benchmark(args, console: Console) -> int:
    import json

    text = json.dumps(_conversions("to-pytest-benchmark").to_pytest_benchmark(args.run), indent=2, default=str)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise RunFolderError(f"--out {out}: is a folder, expected the JSON file to write")
        writable_folder(out.parent)
        atomic_write(out, text)
        console.print(f"written: {args.out}")
    else:
        print(text)
    return 0


def cmd_from_pytest_benchmark(args, console: Console) -> int:
    from ..analysis.tables import summary_markdown
    conversions = _conversions("from-pytest-benchmark")
    writable_folder(args.out)
    show_new_run(conversions.from_pytest_benchmark(args.json, args.out, summary_markdown), console)
    return 0
