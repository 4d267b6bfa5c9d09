"""quantbench fit: the seed's 7B table, exact overheads, and a recommendation by what fits."""

import os
import subprocess
import sys

import pytest

from quantbench.harness.analysis.memory_planner import fit, gpu_memory, parse_memory, precisions


def test_reproduces_the_seed_7b_table():
    """26.1, 13.0, 6.5 and 3.3 GiB for 4, 2, 1 and 0.5 bytes a parameter (the seed prints GiB as GB)."""
    codes = {p.name.split()[0]: round(7e9 * p.code_bytes_per_param / 2**30, 1) for p in precisions()}
    assert codes == {"fp32": 26.1, "fp16": 13.0, "int8": 6.5, "int4": 3.3, "int2": 1.6}


def test_overhead_of_scales_and_zeros_is_counted():
    by_name = {p.name: p.bytes_per_param for p in precisions(128)}
    assert by_name["int4 g128"] == 0.5 + 4 / 128 == 0.53125  # TARGETS.md: 4.25 bits
    assert {p.name: p.bytes_per_param for p in precisions(32)}["int2 g32"] == 0.25 + 4 / 32


def test_recommends_by_what_fits_not_by_thresholds():
    # the seed's rule says FP16 for any GPU over 16 GB; a 13B model's fp16 weights do not fit 24 GiB
    _, best = fit(13e9, 24, headroom=0.2)
    assert best.precision.name == "int8 g128"
    _, best = fit(7e9, 8, headroom=0.2)
    assert best.precision.name == "int4 g128"
    _, best = fit(1e9, 8, headroom=0.2)
    assert best.precision.name == "fp32"
    assert fit(70e9, 8, headroom=0.2)[1] is None


def test_memory_and_gpu_names():
    assert parse_memory("8GiB") == parse_memory("8 GB") == parse_memory("8") == 8.0
    assert parse_memory("512MiB") == 0.5
    assert gpu_memory("rtx 4090") == 24.0
    with pytest.raises(ValueError, match="unknown GPU 'RTX 9999'"):
        gpu_memory("RTX 9999")


def test_cli():
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "fit", "--params", "7e9", "--gpu-mem",
                          "8GiB"], capture_output=True, text=True)
    assert out.returncode == 0 and "Recommendation: int4 g128" in out.stdout and "26.1" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "fit", "--params", "7e9", "--gpu-mem",
                          "lots"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--gpu-mem" in bad.stderr and "Traceback" not in bad.stderr


def test_a_huge_model_prints_its_sizes_in_powers_of_ten():
    """--params 1e300 is a number like any other: the sizes come in powers of ten, not as a
    300-digit figure."""
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "fit", "--params", "1e300", "--gpu-mem",
                          "8GiB"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "Nothing fits: even int2 g128 needs 2.62e+290 GiB" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) < 200
