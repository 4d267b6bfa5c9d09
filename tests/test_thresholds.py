"""Regression thresholds per op and metric, from YAML: defaults, overrides, and errors that name the key."""

import pytest

from quantbench.harness.config import ConfigError
from quantbench.harness.analysis.thresholds import Thresholds, ThresholdSet, load_thresholds, parse_thresholds

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_the_shipped_file_holds_the_built_in_defaults():
    assert load_thresholds(ROOT / "configs" / "thresholds.yaml") == ThresholdSet()


def test_an_op_overrides_only_the_keys_it_names():
    t = parse_thresholds({"default": {"latency": {"min_effect": 0.05}, "error": {"max_rise": 0.2}},
                          "ops": {"dequantize": {"latency": {"min_effect": 0.12}}}})
    assert t.for_op("dequantize") == Thresholds(min_effect=0.12, error_rise=0.2)
    assert t.for_op("matmul") == Thresholds(min_effect=0.05, error_rise=0.2)  # the default, not the built-in
    assert parse_thresholds(None) == ThresholdSet()  # an empty file: the built-in defaults


def test_flags_go_over_every_op():
    t = parse_thresholds({"ops": {"matmul": {"latency": {"min_effect": 0.2}}}}).overridden(alpha=0.01)
    assert t.for_op("matmul").alpha == t.for_op("quantize").alpha == 0.01
    assert t.for_op("matmul").min_effect == 0.2


@pytest.mark.parametrize("text,message", [
    ("default:\n  latncy: {min_effect: 0.2}\n", ":2: unknown key 'default.latncy' (did you mean 'latency'?)"),
    ("ops:\n  dequantise: {latency: {min_effect: 0.1}}\n", ":2: ops.dequantise: Input should be 'quantize'"),
    ("default:\n  latency: {min_effect: 1.5}\n", ":2: default.latency.min_effect: Input should be less than 1"),
    ("default:\n  snr_db: {max_drop: -1}\n", "default.snr_db.max_drop: Input should be greater than or equal to 0"),
    ("default:\n  latency: {alpha: fast}\n", "default.latency.alpha: Input should be a valid number (got 'fast')"),
    ("- 1\n", "expected a mapping with `default:` and/or `ops:`"),
    # an infinite tolerance is a check that can never fail: a gate that passes anything
    ("default:\n  snr_db: {max_drop: .inf}\n", "default.snr_db.max_drop: Input should be a finite number"),
    ("ops:\n  matmul: {error: {max_rise: .nan}}\n", "ops.matmul.error.max_rise: Input should be a finite number"),
])
def test_a_wrong_file_names_the_key_line_and_expectation(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_thresholds(path)
    assert message in str(e.value)
