"""The host's side of a planned call of each launcher, without a GPU: what PyTorch ops and launches
it makes, and how long its Python takes on this CPU.

    python3 scripts/host_path.py                 # every launcher, 1024^2 weight, float16
    python3 scripts/host_path.py --calls 2000    # fewer timed calls (a quick look)

A launcher plans a kernel's launch on its first call of a call signature and later calls go
straight to the compiled kernel (kernels/launching.py). On a GPU the `host_us` column times such
calls. Here every Launcher runs as on a GPU, with the compiled kernel's C launch stood in for by
a call that counts: what is left is exactly the Python and PyTorch a planned call runs before its
launches. For each launcher this prints:

- the PyTorch ops one planned call dispatches (TorchDispatchMode): the outputs' allocations and
  views, and nothing else. An op that reads a tensor's value on the host (`.item()`, a
  comparison's bool) would wait for the GPU; a `.contiguous()` or `.to()` would copy.
- the launches it makes.
- its time per call on this CPU, best of `--rounds` rounds of `--calls` calls: a figure for
  comparing two versions of the host path on one machine, not a GPU host's `host_us` (which adds
  the CUDA allocator, the driver's launch and a slower CPU; kernels/NOTES.md).

tests/test_host_path.py pins the ops and launches of every planned call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class Launches:
    """Counts the launches that planned calls make (each Launcher's stand-in C launch)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args: Any) -> None:
        self.count += 1


@contextmanager
def planned_without_gpu() -> Iterator[Launches]:
    """Every Launcher of the kernels runs its direct-launch path on CPU tensors: the interpreter's
    bypass off, the CUDA device and stream stood in for, and a first call of a signature planning
    a launch whose C function only counts (no kernel runs, so outputs hold garbage). Put back on
    exit."""
    from quantbench.kernels import dequantization, launching, quantization, quantized_matmul, scale_codes, w8a8

    launches = Launches()
    saved: list[tuple[Any, str, Any]] = []

    def swap(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def plan(launcher):
        def stand_in(key, grid, args, constants):
            launcher.plans[key] = (launches, (), 0, (), (1, 1, 1), "stand-in")
            launches()
        return stand_in

    for module in (launching, quantized_matmul, w8a8):
        swap(module, "INTERPRETED", False)
    swap(launching, "_current_device", lambda: 0)
    swap(launching, "_current_stream", lambda device: 0)
    swap(launching, "_hooks_set", lambda: False)
    for module in (quantized_matmul, dequantization, quantization, scale_codes, w8a8):
        for name, value in vars(module).items():
            if isinstance(value, launching.Launcher):
                swap(value, "plans", {})
                swap(value, "last_choice", value.last_choice)
                swap(value, "_launch_and_plan", plan(value))
    try:
        yield launches
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


class DispatchedOps(TorchDispatchMode):
    """The names of the PyTorch ops dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def planned_call(call: Callable[[], Any], launches: Launches) -> tuple[list[str], int]:
    """(the ops, the launches) of a planned call of `call`: called once to plan, then watched."""
    call()
    before = launches.count
    with DispatchedOps() as watched:
        call()
    return watched.ops, launches.count - before


def launcher_calls(n: int = 1024, k: int = 1024) -> dict[str, Callable[[], Any]]:
    """Each launcher's call on an n x k float16 weight, by name: qmatmul on each of its paths,
    dequantize, quantize (per group, per tensor, nf4_dq) and the W8A8 matmul."""
    from quantbench import kernels
    from quantbench.kernels import QuantSpec, quantize_ref, w8a8

    w = torch.randn(n, k, dtype=torch.float16)
    int4 = quantize_ref(w, QuantSpec(4, "asymmetric", "group", 128))
    int8 = quantize_ref(w, QuantSpec(8, "asymmetric", "channel"))
    x = {m: torch.randn(m, k, dtype=torch.float16) for m in (1, 16, 256)}
    w_int8, w_scales = w8a8.pack_weights(quantize_ref(w.float(), QuantSpec(8, "symmetric", "channel")))
    specs = {"group": QuantSpec(4, "asymmetric", "group", 128), "tensor": QuantSpec(4, "asymmetric", "tensor"),
             "nf4_dq": QuantSpec(4, "nf4_dq", "group", 64)}
    return {
        "qmatmul gemv (M = 1)": lambda: kernels.qmatmul(x[1], int4),
        "qmatmul split-k gemm (M = 16)": lambda: kernels.qmatmul(x[16], int4),
        "qmatmul gemm (M = 256, 8-bit)": lambda: kernels.qmatmul(x[256], int8),
        "qmatmul dequantize+cublas (M = 256)": lambda: kernels.qmatmul(x[256], int4),
        "dequantize": lambda: kernels.dequantize(int4),
        "quantize per group": lambda: kernels.quantize(w, specs["group"]),
        "quantize per tensor": lambda: kernels.quantize(w, specs["tensor"]),
        "quantize nf4_dq": lambda: kernels.quantize(w, specs["nf4_dq"]),
        "w8a8_matmul (M = 16)": lambda: w8a8.w8a8_matmul(x[16], w_int8, w_scales),
    }


def seconds_per_call(call: Callable[[], Any], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000, help="calls a round (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (default 5)")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.rounds < 1:
        print("host_path: --calls and --rounds must be at least 1", file=sys.stderr)
        return 2
    # before the kernels (and Triton) are first imported: their checks take CPU tensors then
    os.environ["TRITON_INTERPRET"] = "1"
    with planned_without_gpu() as launches:
        rows = []
        for name, call in launcher_calls().items():
            ops, launched = planned_call(call, launches)
            # the dequantize+cuBLAS path's F.linear runs on the CPU here: its time is a CPU matmul's
            us = None if "cublas" in name else seconds_per_call(call, args.calls, args.rounds) * 1e6
            rows.append((name, launched, ", ".join(ops), us))
    print(f"A planned call's host path on this CPU ({torch.__version__}; launches stood in for; "
          "not a GPU host's host_us):")
    width = max(len(r[0]) for r in rows)
    for name, launched, ops, us in rows:
        timed = f"{us:6.2f} us" if us is not None else "   (a CPU matmul)"
        print(f"  {name:<{width}}  {timed}  launches {launched}  ops: {ops or '(none)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
