"""scripts/ab_kernels.py on the CPU: another revision's kernels imported beside this checkout's,
outputs compared (no time is judged: the interpreter's mean nothing)."""

import importlib.util
import os
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


def test_a_revision_exported_to_a_folder_stands_for_it(tmp_path):
    """gpu_session.sh export writes .ab/REV/kernels where the history is; the GPU machine's copy of
    the checkout has none, and ab_kernels takes the folder for the revision."""
    session = ROOT / "scripts" / "gpu_session.sh"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    done = subprocess.run(["bash", str(session), "export", "HEAD"], cwd=clone, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    order = (clone / ".ab" / "order").read_text().split()  # the revisions in the order given
    folders = [clone / ".ab" / name for name in order]
    assert len(folders) == 1 and (folders[0] / "kernels" / "__init__.py").is_file()
    assert "/.ab/" in (clone / ".git" / "info" / "exclude").read_text().split()  # never committed
    done = subprocess.run([sys.executable, str(SCRIPT), str(folders[0]), "--smoke", "--device", "cpu", "--repeats",
                           "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sum("outputs identical" in line for line in done.stdout.splitlines()) == 2, done.stdout


def test_the_session_script_names_what_it_was_not_given(tmp_path):
    session = ROOT / "scripts" / "gpu_session.sh"
    cases = {("bash", str(session)): "the stage is one of export, verify, records, matmul, timing",
             ("bash", str(session), "export"): "export takes the revisions",
             ("bash", str(session), "export", "no-such-rev"): "no-such-rev: not a commit here",
             ("bash", str(session), "records"): "set QUANTBENCH_GIT_COMMIT"}
    for argv, message in cases.items():
        done = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "QUANTBENCH_GIT_COMMIT"})
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.splitlines()) == 1, (argv, done.stderr)
