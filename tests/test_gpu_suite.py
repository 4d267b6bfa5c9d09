"""scripts/gpu_suite.py on the CPU (--device cpu): tests split over processes side by side, each
under a time limit, with one summary that names what failed and how far a cut job got."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_suite.py"


def _run(tmp_path, source: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    (tmp_path / "test_sample.py").write_text(source)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "test_sample.py"), "--device", "cpu",
                           "--out", str(out), *args], capture_output=True, text=True, timeout=600)
    summary = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    return done, summary


def test_every_test_runs_once_and_a_failure_is_named(tmp_path):
    source = "\n".join(f"def test_{i}():\n    assert {i} != 3\n" for i in range(7))
    done, summary = _run(tmp_path, source, "--jobs", "3")
    assert done.returncode == 1, done.stderr
    assert "# 7 tests in 3 jobs" in summary and "test_sample.py::test_3" in summary
    logs = sorted((tmp_path / "out").glob("job-*.log"))
    passed = [int(m) for log in logs for m in re.findall(r"(\d+) passed", log.read_text())]
    assert len(logs) == 3 and sum(passed) == 6  # each test ran in exactly one job


def test_skip_leaves_out_the_first_tests_and_all_passing_exits_0(tmp_path):
    source = "\n".join(f"def test_{i}():\n    assert {i} >= 2\n" for i in range(5))
    done, summary = _run(tmp_path, source, "--jobs", "2", "--skip", "2")
    assert done.returncode == 0, summary + done.stderr
    assert "# 3 tests in 2 jobs" in summary and "the first 2 left out" in summary


def test_a_job_cut_by_its_time_limit_says_how_far_it_got(tmp_path):
    source = "import time\n\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n\ndef test_c():\n    time.sleep(120)\n"
    done, summary = _run(tmp_path, source, "--jobs", "1", "--timeout", "20")
    assert done.returncode == 1
    assert "cut by the time limit: 2 passed" in summary


def test_bad_arguments_and_an_empty_collection_exit_2(tmp_path):
    done, _ = _run(tmp_path, "def test_a():\n    pass\n", "--jobs", "0")
    assert done.returncode == 2 and "--jobs" in done.stderr
    done, _ = _run(tmp_path, "def helper():\n    pass\n")
    assert done.returncode == 2 and "no test collected" in done.stderr
