"""Tests run on the CPU: Triton executes kernels through its interpreter, which it reads from
TRITON_INTERPRET when a kernel is defined, so this is set before anything imports the kernels."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def gen():
    """A fresh seeded generator per test: inputs differ between tests, not between runs."""
    return torch.Generator().manual_seed(1234)
