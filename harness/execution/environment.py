"""The environment a run was measured in: GPU, driver, library versions, git state, host."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from .gpu_monitor import GpuMonitor

CPU_GPU_NAME = "cpu (Triton interpreter)"
# The optional libraries the peers come from (registry/peers.py): their versions, or None where
# one is not installed, are part of what a run was measured with.
PEER_PACKAGES = ("bitsandbytes", "torchao", "gemlite")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """Run git in the source tree of this package (where a checkout has one), else the cwd.
    None where neither is a git checkout (a copied tree, an installed wheel)."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _nvml_env(monitor: GpuMonitor | None, why_not: str | None) -> dict:
    """Driver versions and the GPU's settings and clocks now (ECC, MIG, power limit), from NVML;
    where NVML cannot be read, the driver is recorded as unknown with the reason."""
    if monitor is None:
        return {"driver": f"unknown ({why_not})", "gpu_state_start": None}
    nvml = monitor.nvml
    cuda_driver = monitor.query(nvml.nvmlSystemGetCudaDriverVersion)  # e.g. 12040 for 12.4
    return {
        "driver": monitor.query(nvml.nvmlSystemGetDriverVersion),
        "cuda_driver": None if cuda_driver is None else f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}",
        "nvml_uuid": monitor.query(nvml.nvmlDeviceGetUUID, monitor.handle),
        "gpu_state_start": monitor.state(),
    }


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else CPU_GPU_NAME


def collect_env(device: torch.device, monitor: GpuMonitor | None = None, why_no_monitor: str | None = None) -> dict:
    """The environment of a run. On a GPU, `monitor` (gpu_state.open_monitor) adds what NVML
    knows; the clocks and power limit at the end of the run go in meta.json `gpu_state_end`."""
    if os.environ.get("QUANTBENCH_GIT_COMMIT"):
        # a tree copied to a remote GPU machine: the caller says what it is. This wins over git,
        # because such a copy may carry a stale .git (seen: every H100 run of session 2 recorded
        # the commit the machine's .git was left at, not the tree's)
        commit = os.environ["QUANTBENCH_GIT_COMMIT"]
        status = os.environ.get("QUANTBENCH_GIT_DIRTY", "")
    else:
        status = _git("status", "--porcelain", "--untracked-files=no")
        commit = _git("rev-parse", "HEAD")
    env = {
        "device": str(device),
        "gpu": gpu_name(device),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "cuda_runtime": torch.version.cuda,
        "peers": {package: _version(package) for package in PEER_PACKAGES},
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({
            "gpu_uuid": str(getattr(props, "uuid", "")) or None,
            "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "gpu_memory_bytes": props.total_memory,
            "l2_cache_bytes": getattr(props, "L2_cache_size", None),
            **_nvml_env(monitor, why_no_monitor or "NVML was not opened"),
        })
    return env
