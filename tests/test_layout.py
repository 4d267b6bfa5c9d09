"""The layout the README's Architecture section describes: harness/ is packages along the path a
case takes, modules stay small, imports point one way, and the commands that read runs load
neither Triton nor (for show and compare) torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"
MAX_LINES = 400

# What each package of harness/ may import from the others. The CLI is on top; analysis and
# reporting read results and never import execution (nor, through it, the kernels' launchers).
ALLOWED = {
    "config": set(),
    "results": {"config"},  # the axes, which a row's identity lists
    "ops": {"config", "registry", "results"},  # registry: the records (Role) only; results: the ceiling keys
    "registry": {"config", "ops"},
    "execution": {"config", "ops", "registry", "results", "analysis"},  # analysis: the summary a run writes
    "analysis": {"config", "results"},
    "reporting": {"analysis", "config", "ops", "results"},  # ops: the seeded weights and the error metrics
    "cli": {"analysis", "config", "execution", "ops", "registry", "reporting", "results"},
    "public": {"registry"},
}


def _modules():
    return sorted(p for p in HARNESS.rglob("*.py") if "__pycache__" not in p.parts)


def _harness_imports(path: Path) -> set[str]:
    """The harness packages a module imports, at the top or inside a function."""
    package = path.relative_to(HARNESS).parts[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[:2] == ["quantbench", "harness"] and len(parts) > 2:
                    found.add(parts[2])
                continue
            # relative: level 1 is the module's own package (or harness/ for a top-level module)
            inside_package = path.parent != HARNESS
            if node.level == 1 and inside_package:
                found.add(package)
            elif node.module:
                found.add(node.module.split(".")[0])
            else:  # `from .. import x`: x is a package of harness
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[:2] == ["quantbench", "harness"] and len(parts) > 2:
                    found.add(parts[2])
    return found - {package}


def test_the_top_of_harness_holds_packages():
    loose = [p.name for p in HARNESS.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    packages = {p.name for p in HARNESS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED), "a new package needs its line in ALLOWED and in the README's Architecture"


@pytest.mark.parametrize("folder", ["harness", "kernels"])
def test_no_module_passes_the_size_limit(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_imports_point_one_way(path):
    package = path.relative_to(HARNESS).parts[0]
    if path.parent == HARNESS:
        return  # harness/__init__.py
    unexpected = _harness_imports(path) - ALLOWED[package]
    assert unexpected == set(), f"{path.relative_to(ROOT)} imports {sorted(unexpected)}"


def test_the_import_check_sees_relative_and_absolute_imports(tmp_path):
    """The check itself: a reporting module that imports execution, either way, is caught."""
    fake = HARNESS / "reporting" / "_layout_probe.py"
    try:
        fake.write_text("from ..execution import sweep\n\ndef f():\n    import quantbench.harness.execution.timing\n")
        assert _harness_imports(fake) == {"execution"}
    finally:
        fake.unlink()


QUICK = ROOT / "results" / "h200" / "quick-20261202T201422Z"
CHECK = """
import contextlib, io, sys
from quantbench.harness.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(sys.argv[1:])
print(rc, "triton" in sys.modules, "torch" in sys.modules)
"""


@pytest.mark.parametrize("args, torch_too", [
    (["list"], False),
    (["show", str(QUICK)], True),
    (["compare", str(QUICK), str(QUICK), "--out", "{tmp}/compare"], True),
    (["report", str(QUICK), "--out", "{tmp}/report"], False),
])
def test_reading_commands_import_no_triton(args, torch_too, tmp_path):
    """list, show, compare and report work on a laptop without a GPU toolchain: no Triton (show and
    compare not even torch; list needs the op contracts, report redraws weights with torch)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True, timeout=600)
    rc, triton, torch = out.stdout.split()
    assert rc == "0", out.stderr
    assert triton == "False"
    if torch_too:
        assert torch == "False"


def test_the_axes_are_one_list():
    """A case (execution), a row's identity (results) and the exclude keys (config) all follow
    config.schema.AXES: a new axis added there and not to Case fails here."""
    from dataclasses import fields

    from quantbench.harness.config import AXES
    from quantbench.harness.execution.cases import Case
    from quantbench.harness.results import CASE_KEY
    assert [f.name for f in fields(Case)] == [*AXES, "shape_name"]
    assert [c for c in CASE_KEY if c not in ("depth", "shape_name")] == list(AXES)
