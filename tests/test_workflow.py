"""The GPU workflow cannot run here: check that it parses and calls commands that exist."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from quantbench.harness.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "gpu-bench.yml"


def test_workflow_is_valid_and_its_quantbench_commands_parse():
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = flow["jobs"]["bench"]["steps"]
    assert flow["jobs"]["bench"]["runs-on"] == ["self-hosted", "gpu"]
    commands = [line.strip() for step in steps for line in step.get("run", "").splitlines()
                if line.strip().startswith("quantbench ")]
    assert {c.split()[1] for c in commands} == {"run", "compare"}
    parser = build_parser()
    for command in commands:
        words = [re.sub(r"\$\{?(\w+)\}?|\*", "X", w) for w in shlex.split(command)[1:]]
        args = parser.parse_args(words)  # exits (fails the test) on an unknown option
        assert args.func.__name__ == f"cmd_{words[0]}"


def test_the_benchmarks_alone_run_compiled_and_the_suite_interpreted():
    """`pytest tests/benchmarks` must time compiled kernels: the suite's conftest turns Triton's
    interpreter on only for runs that are not the benchmarks alone."""
    probe = ("import sys; sys.path.insert(0, 'tests'); import conftest as c; "
             "print(c._benchmarks_only(['tests/benchmarks']), "
             "c._benchmarks_only(['tests/benchmarks/test_kernels.py::test_kernel', '-q']), "
             "c._benchmarks_only(['tests']), c._benchmarks_only([]), "
             "c._benchmarks_only(['tests/benchmarks', 'tests/test_compare.py']))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True", "False", "False", "False"], out.stderr
