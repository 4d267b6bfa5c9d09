"""The card's folders install under the quantbench namespace, never as bare `kernels`/`harness`."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_folders_into_the_quantbench_namespace(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("quantbench-*.whl")
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
