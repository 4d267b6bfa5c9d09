"""Statistics of a measurement."""

import math

import pytest

from quantbench.harness.timing import Measurement


def test_statistics_by_hand():
    s = Measurement((4.0, 1.0, 3.0, 2.0, 10.0), valid=True).stats()
    assert s["ms"] == 3.0 and s["ms_min"] == 1.0 and s["ms_mean"] == 4.0 and s["n_samples"] == 5
    assert s["ms_std"] == pytest.approx(math.sqrt((0 + 9 + 1 + 4 + 36) / 4))
    assert s["cv"] == pytest.approx(s["ms_std"] / 4.0)
    assert s["ms_p20"] == pytest.approx(1.8) and s["ms_p80"] == pytest.approx(5.2)  # linear interpolation


def test_one_sample_has_no_spread():
    s = Measurement((2.5,), valid=False).stats()
    assert s["ms_std"] == 0.0 and s["cv"] == 0.0 and s["timing_valid"] is False
