"""scripts/ab_kernels.py on the CPU: another revision's kernels imported beside this checkout's,
outputs compared (no time is judged: the interpreter's mean nothing)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ab_kernels.py"


def _script():
    spec = importlib.util.spec_from_file_location("ab_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_compares_head_with_the_working_tree():
    for op in ("quantize", "dequantize"):
        done = subprocess.run([sys.executable, str(SCRIPT), "HEAD", "--smoke", "--device", "cpu", "--repeats", "1",
                               "--op", op], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stdout.splitlines() if line.startswith("  ")]
        assert len(lines) == 2 and all("outputs identical" in line for line in lines), done.stdout
        assert "interpreter" in done.stdout


def test_an_unknown_revision_is_named():
    done = subprocess.run([sys.executable, str(SCRIPT), "no-such-rev", "--smoke", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "no-such-rev" in done.stderr and "Traceback" not in done.stderr


def test_identical_tells_nan_from_a_number_and_none_from_a_tensor():
    identical = _script().identical
    a = torch.tensor([1.0, float("nan"), -2.0])
    assert identical(a, a.clone()) and identical(None, None)
    assert not identical(a, torch.tensor([1.0, 0.0, -2.0])) and not identical(a, None)
    assert not identical(a, a.half()) and not identical(torch.tensor([1, 2]), torch.tensor([1, 3]))


def test_a_shape_that_is_not_positive_is_refused():
    done = subprocess.run([sys.executable, str(SCRIPT), "HEAD", "--shape", "0", "8", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "positive" in done.stderr and "Traceback" not in done.stderr
