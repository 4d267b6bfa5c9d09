"""The card's folders install under the quantbench namespace, never as bare `kernels`/`harness`."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("wheel")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(out_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (built,) = out_dir.glob("quantbench-*.whl")
    return built


def test_wheel_maps_folders_into_the_quantbench_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    # every module of the card's folders ships, subpackages included (pyproject lists them by hand)
    shipped = {f"quantbench/{f.relative_to(ROOT).as_posix()}" for folder in ("kernels", "harness")
               for f in (ROOT / folder).rglob("*.py") if "public" not in f.parts}
    assert shipped - set(names) == set()
    # the public surface (harness/public) is the package itself
    assert "quantbench/__init__.py" in names
    assert not any(n.startswith("quantbench/harness/public/") for n in names)
    assert not any(n.startswith(("kernels/", "harness/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "quantbench = quantbench.harness.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_package_imports_from_the_card_folders():
    import quantbench.harness
    import quantbench.kernels
    assert Path(quantbench.kernels.__file__).parent.name in ("kernels",)
    assert Path(quantbench.harness.__file__).parent.name in ("harness",)


def test_a_wheel_installed_outside_the_repo_runs_the_quick_sweep(wheel, tmp_path):
    """The README's first command from a folder that is not the repository, with quantbench from
    the wheel alone: the shipped config is found by name (`quick`), its cases run (one shard of
    twelve, on the CPU interpreter, to keep the suite short) and the run folder is written there."""
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(site), str(wheel)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import quantbench; print(quantbench.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr  # not the repo's
    done = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "run", "quick", "--device", "cpu",
                           "--shard", "1/12", "--no-progress", "--out", "runs"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (elsewhere / "runs").glob("quick-*")
    rows = pd.read_csv(run / "results.csv")
    assert len(rows) > 0 and set(rows["status"]) <= {"ok", "skipped"}
