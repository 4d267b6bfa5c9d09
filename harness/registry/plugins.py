"""Implementations from other packages: installed entry points (group `quantbench.impls`) and the
modules a config names under `plugins:`. Each provides `quantbench_impls()`, returning a list of
Impl records. Loading is checked: anything wrong is a PluginError naming the plugin."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Callable, Iterable

from ..config import ConfigError, first_line
from .records import Impl

ENTRY_POINT_GROUP = "quantbench.impls"
HOOK = "quantbench_impls"


class PluginError(ConfigError):
    """A plugin that cannot be used; the message names it and what is wrong (a config error: the
    command line exits with status 2)."""


def _records(origin: str, provide: Callable[[], Any]) -> list[Impl]:
    try:
        records = provide()
    except Exception as e:  # a plugin's own failure, reported as the plugin's
        raise PluginError(f"{origin}: {HOOK}() raised {first_line(e)}") from None
    if not isinstance(records, list) or not all(isinstance(r, Impl) for r in records):
        got = type(records).__name__ if not isinstance(records, list) else \
            ", ".join(sorted({type(r).__name__ for r in records if not isinstance(r, Impl)}))
        raise PluginError(f"{origin}: {HOOK}() must return a list of quantbench.Impl records, got {got}")
    return records


def from_entry_points() -> list[tuple[str, list[Impl]]]:
    """(origin, records) of every installed entry point of the group."""
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} ({ep.value})"
        try:
            provide = ep.load()
        except Exception as e:  # an installed plugin that does not import
            raise PluginError(f"{origin}: cannot be loaded: {first_line(e)}") from None
        if not callable(provide):
            raise PluginError(f"{origin}: names {type(provide).__name__}, not a function returning records")
        found.append((origin, _records(origin, provide)))
    return found


def from_modules(modules: Iterable[str]) -> list[tuple[str, list[Impl]]]:
    """(origin, records) of each module named (a config's `plugins:`)."""
    found = []
    for name in modules:
        origin = f"plugin module {name}"
        try:
            module = importlib.import_module(name)
        except Exception as e:  # ModuleNotFoundError, or the module's own error on import
            raise PluginError(f"{origin}: cannot be imported: {first_line(e)}") from None
        provide = getattr(module, HOOK, None)
        if not callable(provide):
            raise PluginError(f"{origin}: defines no function {HOOK}() returning a list of quantbench.Impl")
        found.append((origin, _records(origin, provide)))
    return found
