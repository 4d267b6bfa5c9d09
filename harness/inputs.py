"""Deterministic inputs: the same config and seed give the same tensors on every run and device."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

from quantbench.kernels.spec import FLOAT_DTYPES

from .config import Weights


def derived_seed(seed: int, *parts: object) -> int:
    """A seed for one input, stable across processes (unlike hash()) and independent of the order
    in which cases run."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@lru_cache(maxsize=2)
def make_weights(weights: Weights, seed: int, n: int, k: int, dtype: str, device: str) -> torch.Tensor:
    """W [N, K]: float32 normal(mean, std) drawn on the CPU from a seed derived from the run's seed
    and the shape, then cast to `dtype` and moved to `device`. Every bit width, scheme and
    implementation of one shape sees the same weights."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "weights", n, k))
    w = torch.randn(n, k, generator=gen, dtype=torch.float32) * weights.std + weights.mean
    return w.to(FLOAT_DTYPES[dtype]).to(device)
