"""The run config: its schema (schema.py) and reading it from YAML (loading.py). Imports neither
torch nor Triton, so `show`, `compare` and `report` can read a run's config anywhere."""

from .errors import ConfigError, did_you_mean, first_line
from .loading import load_config, parse_config, read_yaml, resolve_config, shipped_configs, validation_message
from .schema import (AXES, OP_NAMES, NormalWeights, OpName, RunConfig, SafetensorsWeights, Shape,
                     Strict, Sweep, Timing)

__all__ = ["AXES", "OP_NAMES", "ConfigError", "NormalWeights", "OpName", "RunConfig", "SafetensorsWeights", "Shape",
           "Strict", "Sweep", "Timing", "did_you_mean", "first_line", "load_config", "parse_config", "read_yaml", "resolve_config", "shipped_configs",
           "validation_message"]
