"""The GPU workflow cannot run here: check that it parses and calls commands that exist."""

import re
import shlex
from pathlib import Path

import yaml

from quantbench.harness.cli import build_parser

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "gpu-bench.yml"


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
