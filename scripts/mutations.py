"""The mutations that once left the whole test suite green, each applied to a scratch copy of the
tree, with the tests that must now fail. Prints one line per mutation: killed, or SURVIVED.

    python3 scripts/mutations.py                 # the CPU mutations (Triton's interpreter), ~5 min
    python3 scripts/mutations.py --gpu           # the GPU-only ones, through the GPU suite (tests/gpu)
    python3 scripts/mutations.py NAME [NAME ...] # only these
    python3 scripts/mutations.py --out DIR       # also write each mutation's pytest log under DIR

A mutation is a list of exact (file, before, after) replacements; each `before` must occur once.
The copy imports as `quantbench` through a shim folder on PYTHONPATH, ahead of any installed
quantbench, so the mutated code is what the tests run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DERIVED = ["tests/test_derived_numbers.py"]
BOUNDS = ["tests/test_accuracy_bounds.py"]
KERNEL_PATHS = "tests/gpu/test_kernel_paths.py"
ENGINES = "tests/gpu/test_timing_engines.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    edits: tuple[tuple[str, str, str], ...]  # (file, before, after)
    tests: tuple[str, ...]  # pytest arguments
    gpu: bool = False


def m(name: str, edits: list[tuple[str, str, str]], tests: list[str], gpu: bool = False) -> Mutation:
    return Mutation(name, tuple(edits), tuple(tests), gpu)


MUTATIONS = [
    # the numbers users read: speedups, rates, shares, calibration
    m("summary-speedup-inverted", [("harness/analysis/tables.py", 'out[f"ms {impl}"] / out[f"ms {cand}"]',
                                    'out[f"ms {cand}"] / out[f"ms {impl}"]')], DERIVED),
    m("gpu-view-speedup-inverted", [("harness/analysis/gpu_views.py", "ms[impl] / ms[cand]", "ms[cand] / ms[impl]")],
      DERIVED),
    m("report-speedup-inverted", [("harness/reporting/speed_plots.py", "ms[peer] / ms[candidate]",
                                   "ms[candidate] / ms[peer]")], DERIVED),
    m("roofline-share-min", [("harness/analysis/gpu_views.py", ".astype(float).max(axis=1, skipna=True)",
                              ".astype(float).min(axis=1, skipna=True)")], DERIVED),
    m("gbps-1000x", [("harness/execution/case.py", "nbytes / seconds / 1e9", "nbytes / seconds / 1e6")], DERIVED),
    m("tflops-1000x", [("harness/execution/case.py", "flops / seconds / 1e12", "flops / seconds / 1e9")], DERIVED),
    m("intensity-inverted", [("harness/execution/case.py", '"intensity": flops / nbytes', '"intensity": nbytes / flops')],
      DERIVED),
    m("pct-peak-bw-halved", [("harness/execution/case.py", '"pct_peak_bw": 100 *', '"pct_peak_bw": 50 *')], DERIVED),
    m("pct-peak-flops-halved", [("harness/execution/calibration.py", "return 100 * tflops / ceiling", "return 50 * tflops / ceiling")],
      DERIVED),
    m("summary-pct-copy-halved", [("harness/analysis/tables.py", 'out[named("% of copy", cand)] = 100 *',
                                   'out[named("% of copy", cand)] = 50 *')], DERIVED),
    m("gpu-view-pct-copy-halved", [("harness/analysis/gpu_views.py", 'wide[f"{name}: % of copy{suffix}"] = 100 *',
                                    'wide[f"{name}: % of copy{suffix}"] = 50 *')], DERIVED),
    m("copy-calibration-halved", [("harness/execution/calibration.py", "return 2 * COPY_BYTES / (ms * 1e-3) / 1e9",
                                   "return COPY_BYTES / (ms * 1e-3) / 1e9")], DERIVED),
    m("matmul-calibration-halved", [("harness/execution/calibration.py", "return 2 * m * n * k / (ms * 1e-3) / 1e12",
                                     "return m * n * k / (ms * 1e-3) / 1e12")], DERIVED),
    # output error metrics scaled by a common factor
    m("output-noise-doubled", [("harness/ops/metrics.py", "noise = (y.double() - ref).norm().item()",
                                "noise = 2 * (y.double() - ref).norm().item()")], DERIVED),
    m("output-rel-err-doubled", [("harness/ops/metrics.py", "rel = noise / signal if", "rel = 2 * noise / signal if")], DERIVED),
    m("output-snr-10-log", [("harness/ops/metrics.py", "snr = _snr_db(signal, noise, 20)", "snr = _snr_db(signal, noise, 10)")], DERIVED),
    m("output-difference-doubled", [("harness/ops/metrics.py", "diff = (y.double() - ref.double()).abs()",
                                     "diff = 2 * (y.double() - ref.double()).abs()")], DERIVED),
    m("output-difference-pct-halved", [("harness/ops/metrics.py", ".mean().item() * 100,", ".mean().item() * 50,")], DERIVED),
    # the gate
    m("fail-on-always-1", [("harness/cli/reading.py", "return 1 if failing else 0", "return 1")], DERIVED),
    m("fail-on-never", [("harness/cli/reading.py", "return 1 if failing else 0", "return 0")], DERIVED),
    # the method's accuracy changed in a kernel and its reference together
    m("w8a8-tokens-63-levels", [
        ("kernels/w8a8.py", "scale = tl.div_rn(tl.max(amax, axis=0), 127.0)", "scale = tl.div_rn(tl.max(amax, axis=0), 63.0)"),
        ("kernels/w8a8.py", "tl.minimum(tl.maximum(v, -127.0), 127.0)", "tl.minimum(tl.maximum(v, -63.0), 63.0)"),
        ("kernels/w8a8.py", "sx, _ = qparams_ref(xf.amin(dim=1), xf.amax(dim=1), TOKEN_SPEC, torch.float32)",
         "sx = xf.abs().amax(dim=1) / torch.full_like(xf[:, 0], 63.0); sx = torch.where(sx == 0, 1.0, sx)"),
        ("kernels/w8a8.py", ".clamp(-127, 127).round()", ".clamp(-63, 63).round()")], BOUNDS),
    m("w8a8-tokens-floor", [("kernels/w8a8.py", "q = round_half_even(tl.minimum", "q = tl.floor(tl.minimum"),
                            ("kernels/w8a8.py", ".clamp(-127, 127).round()", ".clamp(-127, 127).floor()")], BOUNDS),
    m("weight-step-doubled", [
        ("kernels/quantization.py", "tl.div_rn(span, tl.full", "tl.div_rn(2 * span, tl.full"),
        ("kernels/references.py", "scale = span / torch.full_like(span, spec.qmax)",
         "scale = 2 * span / torch.full_like(span, spec.qmax)")], BOUNDS),
    m("asymmetric-levels-halved", [("kernels/spec.py", "else (1 << self.bits) - 1", "else (1 << (self.bits - 1)) - 1")],
      BOUNDS),
    m("symmetric-levels-minus-one", [("kernels/spec.py", "return (1 << (self.bits - 1)) - 1 if",
                                      "return (1 << (self.bits - 1)) - 2 if")], BOUNDS),
    # GPU-only paths: the interpreter never takes them
    m("gemv-even-load-next-row", [("kernels/quantized_matmul.py", 'packed = tl.load(unit_ptrs, eviction_policy="evict_first")',
                                   'packed = tl.load(unit_ptrs + stride_un, eviction_policy="evict_first")')],
      [KERNEL_PATHS, "-k", "gemv"], gpu=True),
    m("gemv-even-condition", [("kernels/quantized_matmul.py", "if EVEN_N and EVEN_K:\n            packed = tl.load(",
                               "if EVEN_N or EVEN_K:\n            packed = tl.load(")],
      [KERNEL_PATHS, "-k", "gemv"], gpu=True),
    m("split-k-no-barrier", [("kernels/split_k.py", "tl.debug_barrier()  # every", "pass  # every")],
      [KERNEL_PATHS, "-k", "split"], gpu=True),
    m("float32-through-tf32", [("kernels/quantized_matmul.py",
                                "ieee = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and INTERPRETED)",
                                "ieee = x.dtype == torch.bfloat16 and INTERPRETED")],
      [KERNEL_PATHS, "-k", "float32"], gpu=True),
    m("engine-no-flush", [("harness/execution/timing.py", "    flush.zero_()\n    torch.cuda._sleep(SHIELD_CYCLES)",
                           "    torch.cuda._sleep(SHIELD_CYCLES)")],
      [ENGINES, "-k", "cold_l2 and (do_bench or adaptive)"], gpu=True),
    m("cuda-graph-no-flush", [("harness/execution/timing.py", "                    flush.zero_()", "                    pass")],
      [ENGINES, "-k", "cold_l2 and cuda_graph"], gpu=True),
    m("engine-no-spin", [("harness/execution/timing.py", "    flush.zero_()\n    torch.cuda._sleep(SHIELD_CYCLES)\n",
                           "    flush.zero_()\n")],
      [ENGINES, "-k", "slow_launcher and (do_bench or adaptive)"], gpu=True),
]


def scratch_copy(base: Path) -> Path:
    """The working tree (less .git, results and build leftovers) at base/tree, importable as
    quantbench through base/shim."""
    tree = base / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", ".whl", "results", "__pycache__",
                                                              "*.egg-info", ".pytest_cache"))
    (base / "shim" / "quantbench").mkdir(parents=True)
    for pkg in ("harness", "kernels"):
        (base / "shim" / "quantbench" / pkg).symlink_to(tree / pkg)
    (base / "shim" / "quantbench" / "__init__.py").symlink_to(tree / "harness" / "public" / "__init__.py")
    return tree


def run(mutation: Mutation, out: Path | None) -> bool:
    """True when the mutation is killed: the copy's tests fail (and only by failing tests)."""
    with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.name}-") as tmp:
        tree = scratch_copy(Path(tmp))
        for rel, before, after in mutation.edits:
            path = tree / rel
            text = path.read_text()
            if text.count(before) != 1:
                raise SystemExit(f"{mutation.name}: {rel} holds {before!r} {text.count(before)} times, not once")
            path.write_text(text.replace(before, after))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tmp) / "shim"), os.environ.get("PYTHONPATH", "")])}
        if mutation.gpu:
            env["QUANTBENCH_TEST_DEVICE"] = "cuda"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *mutation.tests],
                              cwd=tree, env=env, capture_output=True, text=True)
    if out:
        (out / f"mutation-{mutation.name}.log").write_text(done.stdout + done.stderr)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    killed = done.returncode == 1 and bool(failed)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    edits = "; ".join(f"{rel}: {before.strip()!r} -> {after.strip()!r}" for rel, before, after in mutation.edits)
    print(f"{mutation.name}: {'killed' if killed else 'SURVIVED'} [{summary}]\n    {edits}")
    for line in failed[:3]:
        print(f"    {line}")
    return killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these mutations")
    parser.add_argument("--gpu", action="store_true", help="the GPU-only mutations (needs a CUDA GPU)")
    parser.add_argument("--out", type=Path, help="write each mutation's pytest log here")
    args = parser.parse_args()
    known = {mu.name for mu in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    chosen = ([mu for mu in MUTATIONS if mu.name in args.names] if args.names
              else [mu for mu in MUTATIONS if mu.gpu == args.gpu])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    survived = [mu.name for mu in chosen if not run(mu, args.out)]
    print(f"{len(chosen) - len(survived)} of {len(chosen)} killed" + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
