"""Tests run on the CPU: Triton executes kernels through its interpreter, which it reads from
TRITON_INTERPRET when a kernel is defined, so this is set before anything imports the kernels.

With QUANTBENCH_TEST_DEVICE=cuda the kernel tests run compiled on the GPU instead (the interpreter
accepts code that the GPU compiler rejects, so a changed kernel is checked there too).

`pytest tests/benchmarks` alone times compiled kernels on the GPU and never turns the interpreter
on: interpreter timings would be no benchmark (in a whole-suite run the benchmarks skip instead).
"""

import os
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
DEVICE = "cpu"


def _benchmarks_only(args: list[str]) -> bool:
    paths = [Path(a.split("::")[0]).resolve() for a in args if not a.startswith("-")]
    return bool(paths) and all(p == BENCHMARKS or BENCHMARKS in p.parents for p in paths)


def pytest_configure(config):
    # before collection, so before any test module imports Triton
    global DEVICE
    DEVICE = os.environ.get("QUANTBENCH_TEST_DEVICE") or ("cuda" if _benchmarks_only(config.args) else "cpu")
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def gen():
    """A fresh seeded generator per test: inputs differ between tests, not between runs."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def device():
    return torch.device(DEVICE)
