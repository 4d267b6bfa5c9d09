"""The `flags` column: reasons to distrust a row's time, semicolon-joined ("" when there is none).

- `throttled`: the lowest SM clock read while the row was timed was under 75% of the GPU's
  maximum SM clock (a power or thermal cap, or clocks locked low: the time is not the kernel's
  best). Clocks are read only while samples run, so an idle GPU's low clock does not count.
- `noisy`: the median is not known to the timing target: its relative standard error
  (1.2533 std / sqrt(n) / median, the quantity the adaptive engine samples until) is over
  `timing.target_rse`. The sample coefficient of variation itself is not the test: a kernel of a
  few microseconds has a cv of several percent on any GPU and still a well-known median.

Only GPU timings are flagged: interpreter wall-clock rows (`timing_valid` False) are not timings.
"""

from __future__ import annotations

from . import timing

THROTTLE_FRACTION = 0.75


def median_rse_of(stats: dict) -> float:
    """The median's relative standard error from a row's statistics (std, n, median)."""
    return timing.median_rse_of(stats.get("ms_std"), stats.get("n_samples"), stats.get("ms"))


def row_flags(stats: dict, sm_clock_mhz: float | None, max_sm_clock_mhz: float | None,
              target_rse: float) -> str:
    """The flags of one timed row: `stats` as Measurement.stats() gives them."""
    if not stats.get("timing_valid"):
        return ""
    flags = []
    if sm_clock_mhz is not None and max_sm_clock_mhz and sm_clock_mhz < THROTTLE_FRACTION * max_sm_clock_mhz:
        flags.append("throttled")
    if median_rse_of(stats) > target_rse:
        flags.append("noisy")
    return ";".join(flags)
