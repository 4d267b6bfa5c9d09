"""scripts/sass_count.py compiles the kernels a launcher would run for the H200 (sm_90) on a machine
without a GPU, with the ptxas and nvdisasm that come with Triton, and counts their instructions."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sass_count.py"


def _run(*args: str, interpret: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = interpret
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_counts_the_sass_of_quantize_and_dequantize(tmp_path):
    listing = tmp_path / "q.sass"
    for op in ("quantize", "dequantize"):
        done = _run(op, "4", "asymmetric", "group", "128", "--shape", "64", "1024", "--sass", str(listing))
        assert done.returncode == 0, done.stderr
        line = re.search(rf"{op}_kernel \[.*BLOCK_N=\d+ BLOCK_K=\d+.*\]: (\d+) registers, (\d+) instructions, "
                         r"([\d.]+) elements a thread", done.stdout)
        assert line, done.stdout
        registers, instructions, per_thread = int(line[1]), int(line[2]), float(line[3])
        assert 0 < registers <= 255 and instructions > 50 and per_thread >= 1
    sass = listing.read_text()
    assert sass.count("EXIT") >= 2 and "LDG" in sass and "STG" in sass  # both kernels, loading and storing


def test_refuses_the_interpreter():
    done = _run("quantize", "4", "asymmetric", "group", "128", interpret="1")
    assert done.returncode == 2 and "unset TRITON_INTERPRET" in done.stderr


def test_bad_arguments_are_named_without_a_traceback():
    for args, said in ((("quantize", "3", "asymmetric", "group", "128"), "bits must be one of"),
                       (("quantize", "4", "asymmetric", "group", "128", "--shape", "8", "100"), "must divide K = 100"),
                       (("gemv", "4", "asymmetric", "group", "128", "--config", "BLOCK_N"), "NAME=VALUE"),
                       # built on the CPU: a size past what it builds is refused before any tensor is made
                       (("matmul", "4", "asymmetric", "group", "128", "-M", "1000000"), "more than this script builds"),
                       (("quantize", "8", "asymmetric", "channel", "--shape", "65536", "65536"),
                        "more than this script builds")):
        done = _run(*args)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
