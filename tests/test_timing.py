"""Statistics of a measurement, the adaptive stopping rule and the CUDA-graph engine's arithmetic
(with fake clocks and fake graph replays: no test here asserts a time)."""

import math

import pytest

from quantbench.harness.execution.timing import Measurement, adaptive_samples, median_rse


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


class FakeGraphs:
    """Two CUDA graphs' replay times: reps x (flush + kernel), and reps flushes alone, with noise."""

    def __init__(self, kernel_ms, flush_ms, reps, noise=0.0, seed=0):
        import random
        self.rng = random.Random(seed)
        self.kernel_ms, self.flush_ms, self.reps, self.noise = kernel_ms, flush_ms, reps, noise
        self.kernel_replays = self.flush_replays = 0

    def _jitter(self, t):
        return t * (1 + self.noise * self.rng.gauss(0, 1))

    def replay_kernels(self):
        self.kernel_replays += 1
        return self._jitter(self.reps * (self.flush_ms + self.kernel_ms))

    def replay_flushes(self):
        self.flush_replays += 1
        return self._jitter(self.reps * self.flush_ms)


def test_graph_samples_subtract_the_flush_and_divide_by_the_repetitions():
    from quantbench.harness.execution.timing import graph_samples
    fake = FakeGraphs(kernel_ms=0.004, flush_ms=0.035, reps=20)
    t = timing(engine="cuda_graph", warmup_ms=5, rep_ms=50, min_samples=10, graph_reps=20)
    samples = graph_samples(fake.replay_kernels, fake.replay_flushes, 20, t)
    assert samples == pytest.approx([0.004] * len(samples))
    # warm-up replays are not samples; replays alternate, one flush graph per kernel graph
    assert fake.kernel_replays == fake.flush_replays > len(samples)
    # rep_ms of replay time: each pair takes 20 * (0.039 + 0.035) = 1.48 ms
    assert len(samples) == math.ceil(50 / 1.48)


def test_graph_samples_keep_every_sample_and_recover_the_median_under_noise():
    from quantbench.harness.execution.timing import graph_samples
    fake = FakeGraphs(kernel_ms=0.010, flush_ms=0.035, reps=50, noise=0.002)
    t = timing(engine="cuda_graph", warmup_ms=0, rep_ms=1000, min_samples=10, graph_reps=50)
    samples = graph_samples(fake.replay_kernels, fake.replay_flushes, 50, t)
    m = Measurement(tuple(samples), valid=True).stats()
    assert m["n_samples"] == len(samples) == fake.kernel_replays
    assert m["ms"] == pytest.approx(0.010, rel=0.02) and m["ms_std"] > 0


def test_graph_samples_take_min_samples_of_a_long_kernel():
    from quantbench.harness.execution.timing import graph_samples
    fake = FakeGraphs(kernel_ms=50.0, flush_ms=0.035, reps=2)
    t = timing(engine="cuda_graph", warmup_ms=0, rep_ms=1, min_samples=7, graph_reps=2)
    assert len(graph_samples(fake.replay_kernels, fake.replay_flushes, 2, t)) == 7


def test_graph_samples_without_flush():
    from quantbench.harness.execution.timing import graph_samples
    fake = FakeGraphs(kernel_ms=0.004, flush_ms=0.0, reps=10)
    t = timing(engine="cuda_graph", flush_l2=False, warmup_ms=0, rep_ms=1, min_samples=5, graph_reps=10)
    samples = graph_samples(fake.replay_kernels, None, 10, t)
    assert samples == pytest.approx([0.004] * 25)  # 1 ms of replays of 10 x 0.004 ms
    assert fake.flush_replays == 0


def test_engines_other_than_do_bench_say_they_need_a_gpu():
    import torch

    from quantbench.harness.execution.timing import engine_note
    assert "needs a CUDA GPU" in engine_note(torch.device("cpu"), timing(engine="cuda_graph"))
    assert "needs a CUDA GPU" in engine_note(torch.device("cpu"), timing(engine="adaptive"))
    assert engine_note(torch.device("cpu"), timing()) is None
    assert engine_note(torch.device("cuda"), timing(engine="cuda_graph")) is None


def test_cuda_graph_engine_on_the_cpu_degrades_with_a_note(tmp_path, capsys):
    import json

    import pandas as pd

    from quantbench.harness.config import parse_config
    from quantbench.harness.execution.sweep import run_sweep
    cfg = parse_config({"name": "g", "timing": {"engine": "cuda_graph", "graph_reps": 5, "cpu_reps": 2},
                        "sweep": {"op": "dequantize", "bits": 8, "N": [4], "K": [32]}})
    path = run_sweep(cfg, tmp_path, device="cpu", show_progress=False).path
    assert "timing.engine cuda_graph needs a CUDA GPU" in capsys.readouterr().err
    meta = json.loads((path / "meta.json").read_text())
    assert "needs a CUDA GPU" in meta["timing_note"] and meta["calibration"] == {} and meta["datasheet"] is None
    df = pd.read_csv(path / "results.csv")
    assert (df["status"] == "ok").all() and not df["timing_valid"].any() and (df["n_samples"] == 2).all()
    assert df["peak_mem_bytes"].isna().all() and df["sm_clock_mhz"].isna().all()


def test_graph_reps_is_validated():
    from quantbench.harness.config import ConfigError, parse_config
    with pytest.raises(ConfigError, match="graph_reps"):
        parse_config({"name": "g", "timing": {"engine": "cuda_graph", "graph_reps": 0},
                      "sweep": {"op": "dequantize", "N": [4], "K": [32]}})
