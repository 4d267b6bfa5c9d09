"""Which precision lets a model fit a GPU: memory per precision from the harness's exact byte
accounting, and a recommendation by what actually fits (the seed notebook recommended by fixed
memory thresholds, whatever the model's size)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from quantbench.kernels.spec import QuantSpec

GIB = 1 << 30

# Memory of common GPUs in GiB, as the cards report it (nvidia-smi) where this project measured
# it (H100, H200), else the vendor's nominal size.
GPUS = {
    "GTX 1080": 8.0, "RTX 3060": 12.0, "RTX 3080": 10.0, "RTX 3090": 24.0, "RTX 4070": 12.0,
    "RTX 4080": 16.0, "RTX 4090": 24.0, "RTX 5090": 32.0, "T4": 16.0, "L4": 24.0, "A10": 24.0,
    "A100 40GB": 40.0, "A100 80GB": 80.0, "H100": 81559 / 1024, "H200": 143771 / 1024,
}


@dataclass(frozen=True)
class Precision:
    name: str
    bytes_per_param: float  # everything stored: codes, scales and zeros
    code_bytes_per_param: float  # the codes alone: the seed notebook's 4 / 2 / 1 / 0.5


def precisions(group_size: int = 128) -> list[Precision]:
    """fp32, fp16, and int8 / int4 / int2 with one fp16 scale and zero per group: the bytes per
    parameter come from QuantSpec.nbytes, codes + scales + zeros, like every results row."""
    out = [Precision("fp32", 4.0, 4.0), Precision("fp16", 2.0, 2.0)]
    for bits in (8, 4, 2):
        spec = QuantSpec(bits, "asymmetric", "group", group_size)
        out.append(Precision(f"int{bits} g{group_size}", spec.nbytes(1, group_size, torch.float16) / group_size,
                             bits / 8))
    return out


def parse_memory(text: str) -> float:
    """'8GiB', '8 GB', '24g', '80' -> GiB. GB and G are taken as GiB, as GPU memory is sold."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb|m)?\s*", text.lower())
    if not m:
        raise ValueError(f"--gpu-mem: expected a size such as 8GiB or 24GB, got {text!r}")
    value, unit = float(m.group(1)), m.group(2) or "gib"
    return value / 1024 if unit in ("mib", "mb", "m") else value


def gpu_memory(name: str) -> float:
    for known, gib in GPUS.items():
        if known.lower() == name.lower():
            return gib
    raise ValueError(f"--gpu: unknown GPU {name!r}; known: {', '.join(GPUS)} (or give --gpu-mem)")


@dataclass(frozen=True)
class Fit:
    precision: Precision
    weights_gib: float
    fits: bool


def fit(params: float, gpu_gib: float, headroom: float, group_size: int = 128) -> tuple[list[Fit], Fit | None]:
    """Every precision's weight memory and whether it fits in gpu_gib with `headroom` (a fraction
    of the GPU kept for activations, KV cache and the runtime); and the recommendation: the most
    precise that fits, or None."""
    budget = gpu_gib * (1 - headroom)
    rows = [Fit(p, params * p.bytes_per_param / GIB, params * p.bytes_per_param / GIB <= budget)
            for p in precisions(group_size)]
    return rows, next((r for r in rows if r.fits), None)
