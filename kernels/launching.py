"""Launching an autotuned Triton kernel again without Triton's per-call Python work.

A call through ``tuned[grid](*args, **constants)`` costs the host tens of microseconds before the
kernel is enqueued: the autotuner builds its key and looks up its choice, the heuristics run,
the JIT binds every argument, works out its specialization and looks up the compiled kernel.
Profiled on an H200 (kernels/NOTES.md), that was most of qmatmul's ~70 us against F.linear's
~16 us. None of it changes between two calls with the same shapes, dtypes and alignments, so
``Launcher`` does it once per such call signature, keeps the compiled kernel and the constant
arguments the autotuner and heuristics chose, and launches the compiled kernel directly after.

The signature covers everything Triton specializes a compiled kernel on: each tensor's dtype
and whether its address is 16-byte aligned, and each integer's value (Triton specializes
integers equal to 1 and multiples of 16; the exact value is a stricter key, so a call never runs
a kernel compiled for other arguments).

This reaches into Triton's CompiledKernel (``run``, ``function``, ``packed_metadata``: what
``JITFunction.run`` itself calls, Triton 3.x), and on Triton 3.6 past ``run`` to the C launch
function (launch_function); where that is missing, where a launch hook is set
(a profiler such as proton wants to see every launch) or under the interpreter, every call goes
through Triton as before.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import triton
from triton.runtime import driver
from triton.runtime.autotuner import Autotuner, Heuristics

from .checks import interpreting

try:
    from triton import knobs as _knobs
except ImportError:  # before Triton 3.4
    _knobs = None

Grid = Callable[[dict[str, Any]], tuple[int, ...]]
# Triton reads TRITON_INTERPRET when a kernel module is imported, and this module is imported
# with the kernels: what it says now holds for every kernel it launches
INTERPRETED = interpreting()


def signature(args: tuple) -> tuple:
    """What a compiled kernel is specialized on, for each argument."""
    return tuple((a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else a for a in args)


def describe_choice(config: Any) -> str:
    """An autotuner's choice (a triton.Config) as one line: its constants, warps and stages."""
    options = f"num_warps={config.num_warps} num_stages={config.num_stages}"
    return " ".join([*(f"{name}={value}" for name, value in config.kwargs.items()), options])


_RUNTIME = getattr(_knobs, "runtime", None)
_HookChain = getattr(_knobs, "HookChain", None)


def _hook_set(hook: Any) -> bool:
    # Triton 3.6 keeps launch hooks as HookChain objects, set when they hold calls; older
    # versions as a callable or None
    return hook is not None and (type(hook) is not _HookChain or bool(hook.calls))


def _hooks_set() -> bool:
    """True when a launch hook is installed (or where this Triton has no knobs to say)."""
    if _RUNTIME is None:
        return True
    return _hook_set(_RUNTIME.launch_enter_hook) or _hook_set(_RUNTIME.launch_exit_hook)


_key_tokens: dict[Any, int] = {}


def key_token(key: Any) -> int:
    """A small int standing for the hashable `key`, the same for equal keys for the life of the
    process: a launch key built around it hashes in constant time on every call, where a
    weight's share of the key (prepared.py) is a tuple of some twenty items."""
    return _key_tokens.setdefault(key, len(_key_tokens))


# the current CUDA device and its current stream, as Triton's launch reads them; bound to
# PyTorch's own functions after the first launch, when CUDA is initialized (torch.cuda's
# current_device also checks that, at a cost per call)
_current_device: Callable[[], int] = torch.cuda.current_device
_current_stream: Callable[[int], int] | None = None


def _bind_cuda() -> None:
    global _current_device, _current_stream
    _current_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)
    _current_stream = driver.active.get_current_stream


# Triton versions whose CudaLauncher.__call__ is known to pass its C launch function exactly
# (gridX, gridY, gridZ, stream, function, cooperative grid, PDL, global scratch, profile scratch,
# *its arguments): read from 3.6's source, and tests/test_launching.py checks it against the
# installed version's
_C_LAUNCH_VERSIONS = ("3.6.",)


def launch_function(compiled: Any) -> tuple[Callable, tuple]:
    """(what a planned launch calls, what it passes between the kernel's function and the kernel's
    own arguments) for a compiled kernel.

    compiled.run (Triton's CudaLauncher) is a Python call in front of the C launch function: it
    allocates the two scratch buffers a kernel may ask for and passes its cooperative-grid and
    PDL flags. Where the kernel asks for no scratch (none of this project's do), the C function
    is called directly with the same arguments: ~0.4 us of Python less a launch (measured on a
    CPU host, kernels/NOTES.md). Elsewhere, and on Triton versions not known to call it alike,
    compiled.run."""
    run = compiled.run
    head = (compiled.packed_metadata, None, None, None)  # the launch metadata, the enter and exit hooks: none
    launch = getattr(run, "launch", None)
    if (triton.__version__.startswith(_C_LAUNCH_VERSIONS) and launch is not None
            and getattr(run, "global_scratch_size", 1) == 0 and getattr(run, "profile_scratch_size", 1) == 0):
        return launch, (run.launch_cooperative_grid, run.launch_pdl, None, None) + head
    return run, head


class Launcher:
    """Runs ``tuned`` (an Autotuner over Heuristics over a JITFunction, or any part of that
    chain), remembering per call signature the compiled kernel and its constant arguments.

    ``launcher(grid, args, constants)``: args are the kernel's leading, non-constexpr arguments in
    order; constants the constexpr ones the caller sets; grid maps the full set of constants
    (the caller's and the tuner's) to the launch grid. ``tensors``, with a key: args hold some of
    the kernel's pointers as ints (tensors' data_ptr(), which a weight keeps: Triton's C launcher
    takes an int as the address itself, where a tensor costs it a data_ptr() call and a CUDA driver
    query), and tensors() returns the same arguments with the tensors, for the launches through
    Triton (the first of a key; all of them where there is no direct launch), whose JIT would take
    an int for an integer. ``key``, where the caller has it cheaper
    than ``signature(args)`` (prepared.py keeps a weight's share of it): a hashable that changes
    whenever the signature of args, the constants' values or the grid would. The grid is worked
    out once per key (with no key, from the signature of args, which holds their integer values).

    ``last_choice``: the autotuner's choice for the last launch (describe_choice), None before
    one or where the chain has no autotuner: what a result row reports as its kernel_config."""

    def __init__(self, tuned: Any):
        self.tuned = tuned
        # (device, call signature) -> (what to call and what it takes after the CUfunction
        # (launch_function), the CUfunction, constexpr values, the grid, the autotuner's choice described)
        self.plans: dict[tuple, tuple[Callable, tuple, Any, tuple, tuple[int, int, int], str | None]] = {}
        self.direct = True  # cleared if this Triton's compiled kernels cannot be launched directly
        self.why_not_direct = ""
        self.last_choice: str | None = None

    def __call__(self, grid: Grid, args: tuple, constants: dict[str, Any], key: Any = None,
                 tensors: Callable[[], tuple] | None = None) -> None:
        if not self.direct or INTERPRETED or _hooks_set():
            self.tuned[grid](*(args if tensors is None else tensors()), **constants)
            # the autotuner keeps the config it ran last (best_config): rare paths, so read it here
            self.last_choice = self._autotuner_choice()
            return
        if key is None:
            key = (signature(args), tuple(constants.values()))
        device = _current_device()
        plan = self.plans.get((device, key))
        if plan is None:
            self._launch_and_plan((device, key), grid, args if tensors is None else tensors(), constants)
            return
        run, head, function, tail, g, self.last_choice = plan
        run(g[0], g[1], g[2], _current_stream(device), function, *head, *args, *tail)

    def _launch_and_plan(self, key: tuple, grid: Grid, args: tuple, constants: dict[str, Any]) -> None:
        """Launch through Triton (autotuning on the first call of a shape), then keep what it ran."""
        compiled = self.tuned[grid](*args, **constants)
        self.last_choice = self._autotuner_choice()
        try:
            chosen, jit = self._constants_chosen(args, constants)
            tail = tuple(chosen[name] for name in jit.arg_names[len(args):])
            compiled._init_handles()
            g = tuple(grid(chosen))
            run, head = launch_function(compiled)
            plan = (run, head, compiled.function, tail, g + (1,) * (3 - len(g)), self.last_choice)
            _bind_cuda()
        except (AttributeError, KeyError, TypeError) as exc:
            self.direct = False
            self.why_not_direct = f"{type(exc).__name__}: {exc}"
            return
        self.plans[key] = plan

    def _autotuner_choice(self) -> str | None:
        """describe_choice of the config the chain's autotuner ran last; None without one."""
        fn = self.tuned
        while fn is not None and not isinstance(fn, Autotuner):
            fn = getattr(fn, "fn", None)
        config = getattr(fn, "best_config", None)
        return describe_choice(config) if config is not None else None

    def _constants_chosen(self, args: tuple, constants: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """Every constexpr argument of the last launch: the caller's, the autotuner's choice, the
        heuristics' values (computed as Heuristics.run does), the kernel's defaults for the rest,
        and the JITFunction at the end of the chain (the one object in it with compiled-kernel
        caches)."""
        chosen = dict(constants)
        fn = self.tuned
        while isinstance(fn, (Autotuner, Heuristics)):
            if isinstance(fn, Autotuner):
                chosen.update(fn.best_config.kwargs)
            elif isinstance(fn, Heuristics):
                named = dict(zip(fn.arg_names, args))
                for name, rule in fn.values.items():
                    chosen[name] = rule({**named, **chosen})
            fn = fn.fn
        # a constexpr the call left to its default (quantize's SCALE_DTYPE outside nf4_dq): without
        # it the plan's arguments would come up short and every later call would go through Triton
        for name, param in inspect.signature(fn.fn).parameters.items():  # fn.fn: the kernel's Python function
            if name not in chosen and param.default is not param.empty:
                chosen[name] = param.default
        return chosen, fn
