"""Which implementations exist, for which op, in which role: the built-ins and any plugins.

    from quantbench import Impl, Role

    def quantbench_impls():
        return [Impl(op="matmul", name="mine", role=Role.CANDIDATE,
                     factory=lambda inp: lambda: my_kernel(inp.x, inp.q))]

A package hands such a function over through the entry-point group `quantbench.impls`; a config
names modules under `plugins:`. `load_registry` builds the table and checks it.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, replace
from typing import Iterable

from .plugins import ENTRY_POINT_GROUP, PluginError, from_entry_points, from_modules
from .records import Factory, Impl, Needs, OwnWeights, Role

__all__ = ["ENTRY_POINT_GROUP", "Factory", "Impl", "Needs", "OwnWeights", "PluginError", "Registry", "Role",
           "load_registry"]

# the ops whose rows can take an implementation's own format (its W_hat, bytes and, for a
# product, its method's exact output)
OWN_FORMAT_OPS = frozenset({"matmul", "matmul_w8a8", "quantize", "dequantize"})


@dataclass(frozen=True)
class Registry:
    """Every implementation by (op, name), in the order they were given (built-ins first)."""

    impls: tuple[Impl, ...]

    def get(self, op: str, name: str) -> Impl:
        for impl in self.impls:
            if impl.op == op and impl.name == name:
                return impl
        raise KeyError(f"no implementation {name!r} of {op}")

    def of(self, op: str) -> list[Impl]:
        return [impl for impl in self.impls if impl.op == op]

    def names(self, op: str) -> list[str]:
        return [impl.name for impl in self.of(op)]

    def reference(self, op: str) -> Impl:
        (ref,) = [impl for impl in self.of(op) if impl.role is Role.REFERENCE]
        return ref


def _check(records: list[Impl], origin: str, ops: Iterable[str], taken: dict[tuple[str, str], str]) -> None:
    ops = tuple(ops)
    for impl in records:
        where = f"{origin}: implementation {impl.name!r} of {impl.op!r}"
        if impl.op not in ops:
            raise PluginError(f"{where}: unknown op (the ops are {', '.join(ops)})")
        if not isinstance(impl.role, Role):
            raise PluginError(f"{where}: role must be a quantbench.Role, got {impl.role!r}")
        if impl.role is Role.REFERENCE and origin != "built-in":
            raise PluginError(f"{where}: each op has one reference, the built-in one; use CANDIDATE or PEER")
        if not callable(impl.factory):
            raise PluginError(f"{where}: factory must be a function of the prepared inputs")
        if impl.own_format is not None and impl.op not in OWN_FORMAT_OPS:
            raise PluginError(f"{where}: its own weight format is supported for {', '.join(sorted(OWN_FORMAT_OPS))} only")
        if not isinstance(impl.name, str) or not impl.name.replace("_", "").replace("-", "").isalnum():
            raise PluginError(f"{where}: a name is a text of letters, digits, '_' and '-'")
        if not isinstance(impl.needs, Needs):
            raise PluginError(f"{where}: needs must be a quantbench.Needs, got {type(impl.needs).__name__}")
        for hook in ("own_format", "path", "kernel_config"):
            if getattr(impl, hook) is not None and not callable(getattr(impl, hook)):
                raise PluginError(f"{where}: {hook} must be a function of the inputs (or None), got "
                                  f"{type(getattr(impl, hook)).__name__}")
        if not isinstance(impl.description, str):
            raise PluginError(f"{where}: description must be a text, got {type(impl.description).__name__}")
        if (impl.op, impl.name) in taken:
            raise PluginError(f"{where}: the name is already taken by {taken[impl.op, impl.name]}")
        taken[impl.op, impl.name] = origin


def load_registry(modules: Iterable[str] = (), entry_points: bool = True) -> Registry:
    """The built-ins, then every installed entry point, then `modules` (a config's `plugins:`),
    each checked: a known op, a Role, a name not taken, no second reference."""
    from ..ops import OPS  # the op contracts import torch: only a registry that runs needs them
    from .builtin import BUILTIN_IMPLS
    from .peers import PEER_IMPLS
    taken: dict[tuple[str, str], str] = {}
    _check([*BUILTIN_IMPLS, *PEER_IMPLS], "built-in", OPS, taken)
    loaded = [*BUILTIN_IMPLS, *PEER_IMPLS]
    installed = from_entry_points() if entry_points else []
    # a config may name a module that is also installed as an entry point: it is loaded once
    loaded_modules = {ep.module for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)} if entry_points else set()
    for origin, records in [*installed, *from_modules(m for m in modules if m not in loaded_modules)]:
        _check(records, origin, OPS, taken)
        loaded += [replace(impl, origin=origin) for impl in records]
    return Registry(tuple(loaded))
