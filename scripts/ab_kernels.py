"""Time quantize or dequantize at another revision's kernels/ against the working tree's, in one
process, interleaved, on the same weights, and check that both give the same outputs.

    python3 scripts/ab_kernels.py HEAD~1                      # quantize, the default formats, 8192^2
    python3 scripts/ab_kernels.py 6cf94e4 --op dequantize --shape 28672 8192
    python3 scripts/ab_kernels.py HEAD~1 --smoke --device cpu # small shapes under Triton's interpreter

What a kernel change needs before it is kept: the record's harness runs compare commits that ran
at different times (the GPU's clock and the host move between runs; kernels/NOTES.md), where this
times the two versions side by side, `repeats` rounds of (old, new), each a harness `measure` (L2
flushed, GPU spun before each sample, as the records time), and reports the median of the rounds'
medians with the share of a copy's bandwidth (calibration.copy_bandwidth_gbps, the records' own).
Outputs that differ are flagged and make it exit with status 1: a faster kernel that changed its
codes is not the same kernel.

The other revision's kernels/ is taken with `git archive` into a scratch folder (or copied from a
folder that holds one, exported where the history is: `scripts/gpu_session.sh export REV`) and
imported as the package `kernels_at_rev` beside this checkout's `kernels`. On the CPU (--device cpu, which sets
TRITON_INTERPRET) the times are the interpreter's and say nothing; the outputs are still compared.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (bits, scheme, granularity, group size, dtype): the formats of the default record's quantize rows
FORMATS = [(4, "asymmetric", "group", 128, "float16"), (4, "symmetric", "group", 128, "float16"),
           (4, "asymmetric", "group", 32, "float16"), (4, "asymmetric", "channel", None, "float16"),
           (2, "asymmetric", "group", 128, "float16"), (2, "asymmetric", "channel", None, "float16"),
           (8, "asymmetric", "group", 128, "float16"), (8, "symmetric", "group", 128, "float16"),
           (8, "asymmetric", "group", 32, "float16"), (8, "symmetric", "channel", None, "float16"),
           (4, "asymmetric", "group", 128, "bfloat16"), (8, "asymmetric", "channel", None, "bfloat16"),
           (4, "nf4", "group", 64, "float16"), (8, "fp8", "channel", None, "float16")]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the git revision whose kernels/ is the baseline (A), or a folder holding one")
    ap.add_argument("--op", choices=("quantize", "dequantize"), default="quantize")
    ap.add_argument("--shape", type=int, nargs=2, default=(8192, 8192), metavar=("N", "K"))
    ap.add_argument("--repeats", type=int, default=3, help="rounds of (A, B); the median of their medians is kept")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--smoke", action="store_true", help="a 64 x 256 weight and two formats (the CPU check)")
    return ap.parse_args(argv)


def import_revision(rev: str, folder: Path):
    """`rev`'s kernels/ as the package kernels_at_rev (from folder). `rev` may also be a folder
    holding a kernels/ exported earlier (scripts/gpu_session.sh export): a GPU machine's copy of
    the checkout may have no git history to take a revision from."""
    exported = Path(rev) / "kernels"
    if exported.is_dir():
        shutil.copytree(exported, folder / "kernels_at_rev")
    else:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "kernels"], capture_output=True, check=False)
        if archive.returncode != 0:
            print(f"ab_kernels: git archive {rev} kernels failed: {archive.stderr.decode().strip()}", file=sys.stderr)
            raise SystemExit(2)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        (folder / "kernels").rename(folder / "kernels_at_rev")
    sys.path.insert(0, str(folder))
    import kernels_at_rev
    return kernels_at_rev


def identical(a, b) -> bool:
    """The same tensor, value for value (NaN where the other has NaN), or both None."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return bool((a == b).all())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if min(args.shape) < 1 or args.repeats < 1:
        print(f"ab_kernels: --shape and --repeats take positive numbers, got {list(args.shape)} and {args.repeats}",
              file=sys.stderr)
        return 2
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
    sys.path.insert(0, str(ROOT))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("ab_kernels: no CUDA GPU here; --device cpu compares the outputs under the interpreter", file=sys.stderr)
        return 2
    import kernels as new
    from harness.config.schema import Timing
    from harness.execution.calibration import copy_bandwidth_gbps
    from harness.execution.timing import measure

    device = torch.device(args.device)
    timing = Timing()
    with tempfile.TemporaryDirectory() as scratch:
        old = import_revision(args.rev, Path(scratch))
        n, k = (64, 256) if args.smoke else args.shape
        formats = FORMATS[:1] + FORMATS[-2:-1] if args.smoke else FORMATS
        # the records' own ceiling (a 1 GiB copy, read + write), so that a share here is a record's
        copy_rate = copy_bandwidth_gbps(device) if device.type == "cuda" else None
        print(f"{args.op}, {n} x {k}; A = {args.rev}, B = the working tree; "
              + (f"copy {copy_rate:.0f} GB/s" if copy_rate else "interpreter: no time here means anything"))
        share = lambda moved, us: f"{moved / us / 1e3 / copy_rate:6.1%}" if copy_rate else "     -"
        torch.manual_seed(0)
        differ = 0
        for bits, scheme, granularity, group, dtype_name in formats:
            dtype = getattr(torch, dtype_name)
            w = torch.randn(n, k, device=device, dtype=dtype)
            sides = {}
            for name, lib in (("A", old), ("B", new)):
                spec = lib.QuantSpec(bits, scheme, granularity, group)
                q = lib.quantize(w, spec)
                if args.op == "quantize":
                    sides[name] = (lambda lib=lib, spec=spec: lib.quantize(w, spec), (q.codes, q.scales, q.zeros))
                else:
                    sides[name] = (lambda lib=lib, q=q: lib.dequantize(q, dtype), (lib.dequantize(q, dtype),))
            outputs = [sides[s][1] for s in "AB"]
            same = all(identical(a, b) for a, b in zip(*outputs, strict=True))
            # bytes the op reads and writes: the weight and its quantized form (q: B's), one way or the other
            dense = outputs[1][0] if args.op == "dequantize" else w
            moved = dense.numel() * dense.element_size() + q.nbytes
            rounds = {"A": [], "B": []}
            for _ in range(args.repeats):
                for name in "AB":
                    rounds[name].append(statistics.median(measure(sides[name][0], device, timing).samples_ms))
            a_us, b_us = (statistics.median(rounds[s]) * 1e3 for s in "AB")
            label = f"{bits}b {scheme} {granularity}{group or ''} {dtype_name}"
            print(f"  {label:32s} A {a_us:9.2f} us ({share(moved, a_us)} of copy)   "
                  f"B {b_us:9.2f} us ({share(moved, b_us)})   {(a_us - b_us) / a_us:+6.1%}   "
                  f"{'outputs identical' if same else 'OUTPUTS DIFFER'}", flush=True)
            differ += not same
    if differ:
        print(f"ab_kernels: {differ} format(s) gave different outputs at A and B", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
