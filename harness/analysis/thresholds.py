"""Regression thresholds for `quantbench compare`, per op and metric, from YAML.

    default:                       # every op, unless it names its own
      latency: {alpha: 0.002, min_effect: 0.07}
      snr_db: {max_drop: 0.5}
      error: {max_rise: 0.10, floor: 1.0e-6}
    ops:
      dequantize:
        latency: {min_effect: 0.10}   # the other latency keys keep the default's values

- latency: the raw samples must differ by a two-sided Mann-Whitney U test at p < alpha, and the
  median must move by at least min_effect (a fraction of the baseline's median).
- snr_db: an SNR (`snr_db`, `kernel_snr_db`) that drops by more than max_drop dB.
- error: a relative error (`rel_err` of a weight, `kernel_rel_err` of an output) that rises by more
  than max_rise of its baseline value and by more than floor (so that 1e-9 becoming 2e-9 is not a
  regression).

The default min_effect, 7%, was chosen on real samples: `scripts/detector_power.py` over repeated
identical H100 runs (results/README.md names them and the rates each threshold gave).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from ..config import ConfigError, OpName, Strict, read_yaml, validation_message


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of one op, flat."""

    alpha: float = 0.002
    min_effect: float = 0.07
    snr_tolerance_db: float = 0.5
    error_rise: float = 0.10
    error_floor: float = 1e-6

    def for_op(self, op: str) -> Thresholds:
        return self


@dataclass(frozen=True)
class ThresholdSet:
    """A default and per-op overrides; `for_op` gives the thresholds a case of that op is judged by."""

    default: Thresholds = Thresholds()
    ops: dict[str, Thresholds] = field(default_factory=dict)

    def for_op(self, op: str) -> Thresholds:
        return self.ops.get(op, self.default)

    def overridden(self, **values: float) -> ThresholdSet:
        """The same set with these values (command-line flags) put over the default and every op."""
        if not values:
            return self
        return ThresholdSet(replace(self.default, **values), {op: replace(t, **values) for op, t in self.ops.items()})


Fraction = Annotated[float, Field(gt=0, lt=1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # inf: a check that can never fail


class Latency(Strict):
    alpha: Fraction | None = None
    min_effect: Annotated[float, Field(ge=0, lt=1)] | None = None


class SnrDb(Strict):
    max_drop: NonNegative | None = None


class Error(Strict):
    max_rise: NonNegative | None = None
    floor: NonNegative | None = None


class MetricThresholds(Strict):
    latency: Latency = Latency()
    snr_db: SnrDb = SnrDb()
    error: Error = Error()

    def over(self, base: Thresholds) -> Thresholds:
        """`base` with every value this block sets replaced."""
        values = {"alpha": self.latency.alpha, "min_effect": self.latency.min_effect,
                  "snr_tolerance_db": self.snr_db.max_drop, "error_rise": self.error.max_rise,
                  "error_floor": self.error.floor}
        return replace(base, **{k: v for k, v in values.items() if v is not None})


class ThresholdsFile(Strict):
    default: MetricThresholds = MetricThresholds()
    ops: dict[OpName, MetricThresholds] = {}


KNOWN_KEYS = {"default", "ops", "latency", "snr_db", "error", "alpha", "min_effect", "max_drop", "max_rise", "floor"}


def parse_thresholds(data, source: str = "thresholds", root=None) -> ThresholdSet:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with `default:` and/or `ops:`, got a {type(data).__name__}")
    # YAML reads 1e-6 as text (YAML 1.1 wants a dot: 1.0e-6); take such a number as the number it is
    try:
        parsed = ThresholdsFile.model_validate(_numbers(data))
    except ValidationError as e:
        raise ConfigError(validation_message(e, root, source, KNOWN_KEYS)) from None
    default = parsed.default.over(Thresholds())
    return ThresholdSet(default, {op: block.over(default) for op, block in parsed.ops.items()})


def _numbers(value):
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_thresholds(path: str | Path) -> ThresholdSet:
    """Read and validate a thresholds YAML file; ConfigError names the key, line and expectation."""
    data, root = read_yaml(path)
    return parse_thresholds(data, str(path), root)
