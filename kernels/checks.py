"""Input checks shared by the launchers: each error names the tensor and what was expected."""

from __future__ import annotations

import os

import torch

from .spec import FLOAT_DTYPES, QuantSpec


def interpreting() -> bool:
    """True when Triton runs through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for launch grids on the host: triton.cdiv is a constexpr function there, whose
    call costs microseconds of argument unwrapping per launch."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1), on the host: triton.next_power_of_2 is a
    constexpr function there too, whose unwrapping cost ~4 us a call under cProfile on an H200
    (kernels/NOTES.md, session 14)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def check_device(name: str, t: torch.Tensor) -> None:
    if not t.is_cuda and not interpreting():  # the environment read only off the GPU
        raise ValueError(f"{name} must be on a CUDA device (or set TRITON_INTERPRET=1 to run "
                         f"on the CPU), got a tensor on {t.device}")


def inner_dim_error(x: torch.Tensor, k: int) -> ValueError:
    """The error for activations x whose K is not the weight's k, shared by every product's launcher
    and reference (a launcher tests x.shape[1] != k itself: one comparison on its hot path)."""
    return ValueError(f"x must be [M, K] with K = {k} (the weight's K), got {list(x.shape)}")


_FLOATS = tuple(FLOAT_DTYPES.values())


def check_matrix(name: str, t: object, dtypes: tuple[torch.dtype, ...] | None = None,
                 on_kernel_device: bool = True, unit_stride: bool = True) -> None:
    """A 2-D tensor of one of `dtypes`, with unit stride along its last axis where `unit_stride`
    (any strides otherwise; a single column has no step along it to take, so any stride there);
    with `on_kernel_device`, also on a device the Triton kernels can run on."""
    # what a launcher meets on every call, passed in one expression (on the GPU's host each
    # attribute costs a few hundred ns); anything else goes through the checks that name the fault
    if (type(t) is torch.Tensor and t.dim() == 2 and t.dtype in (dtypes or _FLOATS)
            and (t.stride(1) == 1 or not unit_stride or t.shape[1] == 1) and t.shape[0] and t.shape[1]
            and (t.is_cuda or not on_kernel_device)):
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [rows, cols], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    allowed = _FLOATS if dtypes is None else dtypes
    if t.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(t.dtype).removeprefix('torch.')}")
    if unit_stride and t.stride(1) != 1 and t.shape[1] != 1:  # one column: no step along it is taken
        raise ValueError(f"{name} must be contiguous along its last axis (stride 1), got strides "
                         f"{tuple(t.stride())}; call .contiguous() first")
    if on_kernel_device:
        check_device(name, t)


def check_spec(spec: object) -> None:
    if not isinstance(spec, QuantSpec):
        raise TypeError(f"spec must be a QuantSpec (e.g. QuantSpec(4, 'asymmetric', 'group', 128)), got "
                        f"{type(spec).__name__}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    present = {n: t for n, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in present.items())
        raise ValueError(f"tensors must be on one device, got {where}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise a ValueError naming `name` if t holds NaN or +-Inf: how many, and the first one.

    Cost: one read of t, a temporary bool tensor of t's size and one device-to-host sync; meant
    for when a tensor is loaded, not for a timed call.
    """
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        where = bad.nonzero()
        first = tuple(where[0].tolist())
        raise ValueError(f"{name} holds {where.shape[0]} non-finite value(s) (NaN or Inf), "
                         f"first {t[first].item()} at {list(first)}")
