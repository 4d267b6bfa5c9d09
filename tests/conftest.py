"""Tests run on the CPU: Triton executes kernels through its interpreter, which it reads from
TRITON_INTERPRET when a kernel is defined, so this is set before anything imports the kernels.

With QUANTBENCH_TEST_DEVICE=cuda the kernel tests run compiled on the GPU instead (the interpreter
accepts code that the GPU compiler rejects, so a changed kernel is checked there too).

`pytest tests/benchmarks` alone times compiled kernels on the GPU and never turns the interpreter
on: interpreter timings would be no benchmark (in a whole-suite run the benchmarks skip instead).

tests/gpu is the GPU suite (`make test-gpu`, which sets QUANTBENCH_TEST_DEVICE=cuda): the real
kernels compiled, on shapes that take every kernel path, and the timing engines on kernels of
known duration. In the CPU suite its tests skip; asked for without a GPU it stops with an error
rather than passing by skipping.
"""

import os
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
GPU_SUITE = Path(__file__).resolve().parent / "gpu"
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


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if GPU_SUITE in Path(item.fspath).resolve().parents]
    if not gpu_items:
        return
    if DEVICE != "cuda":
        skip = pytest.mark.skip(reason="the GPU suite: run it with `make test-gpu` on a machine with a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
    elif not torch.cuda.is_available():
        pytest.exit("the GPU suite (QUANTBENCH_TEST_DEVICE=cuda) needs a CUDA GPU, and torch sees none", returncode=2)


@pytest.fixture
def gen():
    """A fresh seeded generator per test: inputs differ between tests, not between runs."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def device():
    return torch.device(DEVICE)


@pytest.fixture
def swap_impl(monkeypatch):
    """swap_impl(op, name, factory): the built-in implementation `name` of `op` made with another
    factory (a broken or slow one) for this test; its role and needs stay."""
    import dataclasses

    from quantbench.harness.registry import builtin

    def swap(op: str, name: str, factory) -> None:
        records = [dataclasses.replace(i, factory=factory) if (i.op, i.name) == (op, name) else i
                   for i in builtin.BUILTIN_IMPLS]
        monkeypatch.setattr(builtin, "BUILTIN_IMPLS", records)
    return swap
