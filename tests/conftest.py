"""Tests run on the CPU: Triton executes kernels through its interpreter, which it reads from
TRITON_INTERPRET when a kernel is defined, so this is set before anything imports the kernels.

With QUANTBENCH_TEST_DEVICE=cuda the kernel tests run compiled on the GPU instead (the interpreter
accepts code that the GPU compiler rejects, so a changed kernel is checked there too).
"""

import os

DEVICE = os.environ.get("QUANTBENCH_TEST_DEVICE", "cpu")
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def gen():
    """A fresh seeded generator per test: inputs differ between tests, not between runs."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def device():
    return torch.device(DEVICE)
