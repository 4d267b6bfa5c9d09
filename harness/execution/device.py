"""The device a sweep runs on: a GPU, or the CPU through Triton's interpreter."""

from __future__ import annotations

import os
import sys

import torch

from ..config import ConfigError


def resolve_device(requested: str) -> torch.device:
    """'auto' is the first GPU if there is one, else the CPU (through Triton's interpreter)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {requested!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested!r} was asked for but no CUDA GPU is available "
                              f"(use 'auto' or 'cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {requested!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {requested!r}")
    return device


def use_interpreter_on_cpu(device: torch.device) -> None:
    """Triton reads TRITON_INTERPRET when a kernel is defined, so it must be set before the kernel
    modules are imported."""
    if device.type != "cpu" or os.environ.get("TRITON_INTERPRET") == "1":
        return
    if "quantbench.kernels.quantization" in sys.modules:
        raise RuntimeError("the Triton kernels were already loaded for the GPU; set TRITON_INTERPRET=1 "
                           "before importing quantbench.kernels to run them on the CPU")
    os.environ["TRITON_INTERPRET"] = "1"
