"""Deterministic inputs: the same config and seed give the same tensors on every run and device."""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from quantbench.kernels.checks import check_finite
from quantbench.kernels.spec import FLOAT_DTYPES

from ..config import ConfigError, NormalWeights, SafetensorsWeights, first_line


def derived_seed(seed: int, *parts: object) -> int:
    """A seed for one input, stable across processes (unlike hash()) and independent of the order
    in which cases run."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def checkpoint_matrices(weights: SafetensorsWeights) -> list[tuple[str, int, int]]:
    """(name, N, K) of every 2-D tensor in the checkpoint whose name matches the glob, in file
    order; read from the header, without loading the tensors."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(Path(weights.path).expanduser()), framework="pt") as f:
            found = []
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                if len(shape) == 2 and fnmatch.fnmatchcase(name, weights.tensors):
                    found.append((name, int(shape[0]), int(shape[1])))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"weights.path: {weights.path} is not a readable safetensors checkpoint "
                          f"({first_line(e)}); expected a file saved by safetensors (a JSON header of "
                          f"tensor names, dtypes and shapes, then the data)", key=("weights", "path")) from None
    return found


def _checkpoint_tensor(weights: SafetensorsWeights, name: str) -> torch.Tensor:
    from safetensors import safe_open
    with safe_open(str(Path(weights.path).expanduser()), framework="pt") as f:
        return f.get_tensor(name)


def activations(seed: int, m: int, k: int, dtype: str, device: str) -> torch.Tensor:
    """x [M, K], standard normal, from a seed derived from the run's seed and the shape only, so
    that a matmul and the first layer of a stack see the same x."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "x", m, k))
    return torch.randn(m, k, generator=gen).to(FLOAT_DTYPES[dtype]).to(device)


@lru_cache(maxsize=4)
def make_weights(weights: NormalWeights | SafetensorsWeights, seed: int, n: int, k: int, dtype: str,
                 device: str, name: str | None = None, layer: int = 0) -> torch.Tensor:
    """W [N, K] in `dtype` on `device`.

    normal: float32 normal(mean, std) drawn on the CPU from a seed derived from the run's seed, the
    shape and the layer (of a stack), then cast; every bit width, scheme and implementation of a
    shape sees the same weights. safetensors: the checkpoint's tensor `name`, cast.
    """
    if isinstance(weights, SafetensorsWeights):
        w = _checkpoint_tensor(weights, name)
        if tuple(w.shape) != (n, k):
            raise ValueError(f"tensor {name!r} in {weights.path} is {list(w.shape)}, expected [{n}, {k}]")
        w = w.to(FLOAT_DTYPES[dtype]).contiguous()
        # NaN or Inf would only poison scales (spec.py): refuse it here, once, outside any timing;
        # a cast to float16 turns values beyond 65504 into Inf
        check_finite(f"tensor {name!r} in {weights.path} (as {dtype})", w)
        return w.to(device)
    parts = ("weights", n, k) if layer == 0 else ("weights", n, k, "layer", layer)
    gen = torch.Generator().manual_seed(derived_seed(seed, *parts))
    w = (torch.randn(n, k, generator=gen, dtype=torch.float32) * weights.std + weights.mean).to(FLOAT_DTYPES[dtype])
    check_finite(f"normal weights (mean {weights.mean}, std {weights.std}) as {dtype}", w)
    return w.to(device)


@dataclass(frozen=True)
class InputSource:
    """Where a workload's tensors come from: the run's weights config, seed and device."""

    weights: NormalWeights | SafetensorsWeights
    seed: int
    device: str

    def weight(self, case, layer: int = 0) -> torch.Tensor:
        return make_weights(self.weights, self.seed, case.N, case.K, case.dtype, self.device,
                            case.shape_name, layer)

    def x(self, case) -> torch.Tensor:
        return activations(self.seed, case.M, case.K, case.dtype, self.device)
