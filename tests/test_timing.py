"""Statistics of a measurement."""

import math

import pytest

from quantbench.harness.timing import Measurement, adaptive_samples, median_rse


def test_statistics_by_hand():
    s = Measurement((4.0, 1.0, 3.0, 2.0, 10.0), valid=True).stats()
    assert s["ms"] == 3.0 and s["ms_min"] == 1.0 and s["ms_mean"] == 4.0 and s["n_samples"] == 5
    assert s["ms_std"] == pytest.approx(math.sqrt((0 + 9 + 1 + 4 + 36) / 4))
    assert s["cv"] == pytest.approx(s["ms_std"] / 4.0)
    assert s["ms_p20"] == pytest.approx(1.8) and s["ms_p80"] == pytest.approx(5.2)  # linear interpolation


def test_one_sample_has_no_spread():
    s = Measurement((2.5,), valid=False).stats()
    assert s["ms_std"] == 0.0 and s["cv"] == 0.0 and s["timing_valid"] is False


class FakeClock:
    """A clock that each sample advances by the sample's own duration (plus launch overhead)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = iter(durations)

    def clock(self):
        return self.now

    def sample(self):
        d = next(self.durations)
        self.now += d + 0.01
        return d


def timing(**kw):
    from quantbench.harness.config import Timing
    return Timing(**kw)


def test_steady_kernel_stops_at_min_samples_once_min_time_passed():
    fake = FakeClock([100.0] * 1000)
    samples = adaptive_samples(fake.sample, fake.clock, timing(min_samples=10, min_time_ms=500))
    assert len(samples) == 10  # 10 x 100 ms passes 500 ms, and identical samples have no spread


def test_short_kernel_samples_for_the_minimum_time():
    fake = FakeClock([1.0] * 10000)
    samples = adaptive_samples(fake.sample, fake.clock, timing(min_samples=10, min_time_ms=500))
    assert 490 <= len(samples) <= 500


def test_noisy_kernel_samples_until_the_median_is_known():
    import random
    rng = random.Random(0)
    fake = FakeClock([10.0 * (1 + 0.05 * rng.gauss(0, 1)) for _ in range(100000)])
    t = timing(min_samples=10, min_time_ms=0, target_rse=0.005, max_time_ms=10**9)
    samples = adaptive_samples(fake.sample, fake.clock, t)
    # 5% noise: 1.2533 * 0.05 / sqrt(n) <= 0.005 needs n of about 157
    assert 100 <= len(samples) <= 250
    assert median_rse(samples) <= 0.005


def test_max_time_bounds_a_kernel_that_never_settles():
    fake = FakeClock([1.0, 100.0] * 10000)
    samples = adaptive_samples(fake.sample, fake.clock, timing(max_time_ms=2000, target_rse=0.001))
    assert sum(samples) <= 2000 + 100 + 1 and median_rse(samples) > 0.001
