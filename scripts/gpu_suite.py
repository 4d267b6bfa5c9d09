"""Run kernel tests on the GPU as several pytest processes side by side, each under a time limit,
with a log per process and one summary: the GPU suite takes longer than a lent machine's
10-minute call when run in one process (kernels/NOTES.md), and a cut process still says how far
it got.

    python3 scripts/gpu_suite.py tests/gpu tests/test_quantize.py --jobs 4 --timeout 500 --out OUT
    python3 scripts/gpu_suite.py tests/gpu/test_kernel_paths.py --skip 124 --jobs 2 --out OUT

The tests are collected once (with QUANTBENCH_TEST_DEVICE=cuda, so that the kernel tests of the
CPU suite run compiled too; `--device cpu` leaves the interpreter on, for checking this script),
`--skip` drops the first K in collection order (those a cut run already passed), and the rest go
to the jobs round-robin, so each job gets some of every file. Writes OUT/job-I.log per job and
OUT/summary.md: per job its tests, the pytest summary line or, for a job cut by its time limit,
the passes, failures and skips counted from its progress characters, and every failed test.
Exit status 0 when every test ran and none failed, 1 when one failed or a job was cut, 2 on bad
arguments or when nothing was collected.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="test files or folders, as pytest takes them")
    ap.add_argument("--jobs", type=int, default=4, help="pytest processes side by side")
    ap.add_argument("--timeout", type=float, default=500.0, help="seconds each process may run")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first K tests in collection order")
    ap.add_argument("--out", type=Path, required=True, help="folder for the logs and summary.md (created)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    return ap.parse_args(argv)


def environment(device: str) -> dict[str, str]:
    env = dict(os.environ)
    if device == "cuda":
        env["QUANTBENCH_TEST_DEVICE"] = "cuda"
    else:
        env.pop("QUANTBENCH_TEST_DEVICE", None)
    return env


def collect(paths: list[str], env: dict[str, str]) -> tuple[list[str], Path | None, str]:
    """The node ids pytest collects from paths, in its order, the rootdir they are relative to (the
    jobs run there), and what pytest printed (for when it collects nothing). Collected in this
    process, with env's variables set, through a plugin that reads the session."""
    import contextlib
    import io

    import pytest

    class Collector:
        ids: list[str] = []
        root: Path | None = None

        def pytest_collection_finish(self, session) -> None:
            Collector.ids = [item.nodeid for item in session.items]
            Collector.root = Path(session.config.rootpath)

    printed = io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(printed):
            pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *paths], plugins=[Collector()])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Collector.ids, Collector.root, printed.getvalue()[-2000:]


def split(ids: list[str], jobs: int) -> list[list[str]]:
    """Round-robin, so that every job gets some of each file (a file's tests differ in length)."""
    return [part for part in (ids[j::jobs] for j in range(jobs)) if part]


SUMMARY_LINE = re.compile(r"^=* ?(\d+ (passed|failed|skipped|error|errors|xfailed|xpassed|deselected|warnings?)"
                          r".*?) in [\d.]+s", re.M)


def outcome(log: str, cut: bool, code: int) -> dict[str, object]:
    """What a job's log says: its pytest summary line, or, when it was cut, the counts of its
    progress characters (. passed, F failed, E error, s skipped, x xfailed), and its failed tests.
    A job that ended without a summary line (pytest refused its arguments) failed."""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", log, re.M)
    line = SUMMARY_LINE.search(log)
    if not cut:
        if line and code in (0, 1):
            return {"result": line.group(1), "failed": failed, "complete": True}
        lines = [text.strip(" !") for text in log.splitlines() if text.strip()]
        why = [text for text in lines if "Exit:" in text or text.startswith("ERROR")] or lines[-1:] or ["(no output)"]
        return {"result": f"pytest ended with exit status {code}: {why[0][:200]}",
                "failed": failed or [f"the job itself (exit status {code})"], "complete": False}
    progress = "".join(re.findall(r"^[.FEsxX]+(?=\s+\[\s*\d+%\]|\s*$)", log, re.M))
    counts = {name: progress.count(ch) for ch, name in (
        (".", "passed"), ("F", "failed"), ("E", "errors"), ("s", "skipped"), ("x", "xfailed"))}
    text = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    return {"result": f"cut by the time limit: {text or 'no test finished'}", "failed": failed,
            "complete": False, "progress_failed": counts["failed"] + counts["errors"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1 or args.timeout <= 0 or args.skip < 0:
        print(f"gpu_suite: --jobs and --timeout take positive numbers and --skip one not below 0, got "
              f"{args.jobs}, {args.timeout} and {args.skip}", file=sys.stderr)
        return 2
    env = environment(args.device)
    ids, root, said = collect([str(Path(p).resolve()) for p in args.paths], env)
    ids = ids[args.skip:]
    if not ids:
        print(f"gpu_suite: no test collected from {' '.join(args.paths)} (after --skip {args.skip}); pytest said:\n"
              f"{said}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    parts = split(ids, args.jobs)
    start = time.monotonic()
    running = []
    for j, part in enumerate(parts):
        log = open(args.out / f"job-{j}.log", "w")
        proc = subprocess.Popen([*PYTEST, "-q", "-rfEs", *part], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=root)  # the node ids are relative to the rootdir
        running.append((j, part, proc, log))
    results = []
    for j, part, proc, log in running:
        try:
            proc.wait(timeout=max(1.0, args.timeout - (time.monotonic() - start)))
            cut = False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            cut = True
        log.close()
        results.append((j, part, proc.returncode, outcome((args.out / f"job-{j}.log").read_text(), cut,
                                                          proc.returncode)))
    lines = [f"# {len(ids)} tests in {len(parts)} jobs ({args.device}), {time.monotonic() - start:.0f} s", "",
             f"Collected from `{' '.join(args.paths)}`" + (f", the first {args.skip} left out" if args.skip else ""),
             "", "| job | tests | result |", "|---|---|---|"]
    failed, complete = [], True
    for j, part, code, said in results:
        lines.append(f"| job-{j}.log | {len(part)} | {said['result']} |")
        failed += said["failed"]
        complete &= bool(said["complete"])
        if not said["complete"] and said.get("progress_failed") and not said["failed"]:
            failed.append(f"job-{j}: {said['progress_failed']} failed before the cut (see its log)")
    if failed:
        lines += ["", "Failed:", "", *[f"- `{f}`" for f in failed]]
    summary = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)
    return 0 if complete and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
