"""The GPU's clocks, power and temperature through NVML (nvidia-ml-py), read while each case is
timed so that a throttled GPU shows on the row, and the GPU's settings (ECC, MIG, power limit,
clocks) at the start and end of a run for meta.json.

NVML is imported lazily: without nvidia-ml-py, without its library or without a GPU, `open_monitor`
says why and the harness records no clocks (the columns stay empty) instead of failing.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

POLL_S = 0.05  # how often the clocks are read while a case is timed


@dataclass(frozen=True)
class Reading:
    """One NVML reading. None where this GPU does not report the quantity."""

    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    power_w: float | None
    temp_c: float | None


def row_columns(readings: list[Reading]) -> dict[str, float | None]:
    """The clock columns of a row from the readings taken while it was timed: the lowest SM and
    memory clocks (what a throttled GPU shows) and the highest power and temperature."""
    def pick(name: str, how) -> float | None:
        values = [getattr(r, name) for r in readings if getattr(r, name) is not None]
        return how(values) if values else None
    return {"sm_clock_mhz": pick("sm_clock_mhz", min), "mem_clock_mhz": pick("mem_clock_mhz", min),
            "power_w": pick("power_w", max), "temp_c": pick("temp_c", max)}


class ClockWatch:
    """Readings taken every `poll_s` seconds by a background thread while the block runs, and one
    as it ends. None at its start: an idle GPU lowers its clocks, which is not throttling, and the
    readings are meant to show the clocks the samples ran at. `poll_s` None: only the last one."""

    def __init__(self, monitor: "GpuMonitor", poll_s: float | None):
        self.monitor, self.poll_s = monitor, poll_s
        self.readings: list[Reading] = []
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.readings.append(self.monitor.read())

    def __enter__(self) -> "ClockWatch":
        self._thread = None
        if self.poll_s is not None:
            self._thread = threading.Thread(target=self._poll, name="quantbench-nvml", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.readings.append(self.monitor.read())

    def columns(self) -> dict[str, float | None]:
        return row_columns(self.readings)


class GpuMonitor:
    """One GPU seen through NVML. `nvml` is the pynvml module (or a test's stand-in with the same
    functions); `handle` the NVML device handle."""

    def __init__(self, nvml: Any, handle: Any):
        self.nvml, self.handle = nvml, handle
        self.max_sm_clock_mhz = self.query(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM)

    def query(self, fn, *args) -> Any:
        """fn(*args), or None where this GPU does not support the query (NVML raises NVMLError)."""
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    def read(self) -> Reading:
        n, h = self.nvml, self.handle
        power_mw = self.query(n.nvmlDeviceGetPowerUsage, h)
        return Reading(sm_clock_mhz=self.query(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                       mem_clock_mhz=self.query(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                       power_w=None if power_mw is None else power_mw / 1e3,
                       temp_c=self.query(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU))

    def watch(self, poll_s: float | None = POLL_S) -> ClockWatch:
        return ClockWatch(self, poll_s)

    def _clock_event_reasons(self) -> list[str] | None:
        """Why the clocks are below their maximum now, by NVML's names (GpuIdle, SwPowerCap, ...)."""
        n = self.nvml
        mask = self.query(getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
                           or n.nvmlDeviceGetCurrentClocksThrottleReasons, self.handle)
        if mask is None:
            return None
        prefix = "nvmlClocksEventReason"
        names = {name.removeprefix(prefix): getattr(n, name) for name in dir(n)
                 if name.startswith(prefix) and name.removeprefix(prefix) not in ("All", "None")}
        if not names:  # an nvidia-ml-py without the names: the raw bit mask
            return [hex(mask)] if mask else []
        return sorted(name for name, bit in names.items() if mask & bit)

    def state(self) -> dict[str, Any]:
        """The GPU's settings and clocks now, for meta.json (at the start and at the end of a run)."""
        n, h, q = self.nvml, self.handle, self.query
        ecc = q(n.nvmlDeviceGetEccMode, h)
        mig = q(n.nvmlDeviceGetMigMode, h)
        limit_mw = q(n.nvmlDeviceGetPowerManagementLimit, h)
        enforced_mw = q(n.nvmlDeviceGetEnforcedPowerLimit, h)
        return {
            **vars(self.read()),
            "max_sm_clock_mhz": self.max_sm_clock_mhz,
            "max_mem_clock_mhz": q(n.nvmlDeviceGetMaxClockInfo, h, n.NVML_CLOCK_MEM),
            "applications_sm_clock_mhz": q(n.nvmlDeviceGetApplicationsClock, h, n.NVML_CLOCK_SM),
            "power_limit_w": None if limit_mw is None else limit_mw / 1e3,
            "enforced_power_limit_w": None if enforced_mw is None else enforced_mw / 1e3,
            "ecc_enabled": None if ecc is None else bool(ecc[0]),  # (current, pending)
            "mig_enabled": None if mig is None else bool(mig[0]),
            "performance_state": q(n.nvmlDeviceGetPerformanceState, h),
            "clock_event_reasons": self._clock_event_reasons(),
        }

    def close(self) -> None:
        self.query(self.nvml.nvmlShutdown)


def _load_nvml() -> Any:
    import pynvml  # nvidia-ml-py
    return pynvml


def _handle(nvml: Any, device: torch.device) -> Any:
    """The NVML handle of a torch device: by UUID or PCI bus id (right under CUDA_VISIBLE_DEVICES,
    which renumbers devices for CUDA but not for NVML), else by index where nothing renumbers them."""
    props = torch.cuda.get_device_properties(device)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        try:  # torch prints the UUID bare; NVML names it GPU-<uuid>
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except nvml.NVMLError:
            pass  # try the PCI bus id
    if hasattr(props, "pci_bus_id"):
        return nvml.nvmlDeviceGetHandleByPciBusId(
            f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        raise LookupError("this torch gives neither a GPU UUID nor a PCI bus id, and CUDA_VISIBLE_DEVICES "
                          "renumbers the GPUs")
    return nvml.nvmlDeviceGetHandleByIndex(device.index or 0)


def open_monitor(device: torch.device, nvml: Any = None) -> tuple[GpuMonitor | None, str | None]:
    """(monitor, None) for a GPU that NVML can read; (None, why not) otherwise."""
    if device.type != "cuda":
        return None, "no GPU: clocks are not read"
    try:
        nvml = nvml or _load_nvml()
    except ImportError:
        return None, "nvidia-ml-py is not installed: clocks are not read"
    try:
        nvml.nvmlInit()
        return GpuMonitor(nvml, _handle(nvml, device)), None
    except (nvml.NVMLError, LookupError) as e:  # no driver library, a MIG slice, an unknown UUID
        return None, f"NVML cannot read this GPU ({type(e).__name__}: {e}): clocks are not read"


@contextmanager
def watched(monitor: GpuMonitor | None) -> Iterator[ClockWatch | None]:
    """A ClockWatch around the block, or nothing where there is no monitor."""
    if monitor is None:
        yield None
        return
    with monitor.watch() as watch:
        yield watch
