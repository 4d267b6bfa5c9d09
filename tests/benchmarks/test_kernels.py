"""pytest-benchmark over a quantbench config, timed on the GPU, L2 flushed before every round:

    pytest tests/benchmarks --benchmark-json=out.json [--benchmark-save-data]
    pytest tests/benchmarks --benchmark-compare --benchmark-compare-fail=median:5%
    QUANTBENCH_BENCH_CONFIG=configs/default.yaml pytest tests/benchmarks ...

Skipped without a GPU, and under Triton's interpreter (a whole-suite run): it times compiled kernels.
Each round's time is GPU time between two CUDA events (timing.GpuEventClock), after a flush and a
spin, as `quantbench run` takes a sample: the host clock would time the Python call, launch and
synchronisation, which for these kernels is most of it. Each case is also checked against its
reference, as in `quantbench run`; the case goes into extra_info, so that `quantbench
from-pytest-benchmark` can turn the JSON into a run folder."""

import os
import time
from pathlib import Path

import pytest
import torch

from quantbench.harness.execution.cases import expand
from quantbench.harness.config import load_config
from quantbench.harness.ops.inputs import InputSource
from quantbench.harness.ops import OPS, Skipped
from quantbench.harness.results.pytest_benchmark import bench_group, bench_id
from quantbench.harness.execution.timing import GpuEventClock, enqueue_flush_and_spin, l2_flush_buffer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(os.environ.get("QUANTBENCH_BENCH_CONFIG", ROOT / "configs" / "quick.yaml"))
CASES = [c for c in expand(CONFIG) if not c.layers]
WARMUP_S = 0.2
ROUNDS = 200
GPU_CLOCK = GpuEventClock()  # a stack has one row per depth: use quantbench run

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmarks time GPU kernels"),
    # tests/conftest.py turns the interpreter on for a whole-suite run; `pytest tests/benchmarks` does not
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="Triton's interpreter is on (TRITON_INTERPRET=1): run `pytest tests/benchmarks` on its "
                              "own, or with QUANTBENCH_TEST_DEVICE=cuda, to time compiled kernels"),
]


@pytest.mark.benchmark(timer=GPU_CLOCK)
@pytest.mark.parametrize("case", CASES, ids=lambda c: bench_id(c.as_dict()))
def test_kernel(benchmark, case):
    op = OPS[case.op]
    inputs = op.prepare(case, InputSource(CONFIG.weights, CONFIG.seed, "cuda"))
    try:
        fn = op.impls[case.impl](inputs)
    except Skipped as e:
        pytest.skip(str(e))
    out = fn()  # compiles and autotunes outside the rounds
    if case.impl in op.checked:
        assert op.verify(out, op.impls[op.reference](inputs)(), inputs) is None
    flush = l2_flush_buffer(torch.device("cuda"))

    def flush_and_spin():
        enqueue_flush_and_spin(flush)

    # Warm up for a time, not a count (as do_bench does), so that the clocks and caches are warm.
    warm_until = time.perf_counter() + WARMUP_S
    while time.perf_counter() < warm_until:
        flush_and_spin()
        fn()
        torch.cuda.synchronize()
    benchmark.group = bench_group(case.as_dict())
    benchmark.extra_info.update(timing_valid=True, gpu=torch.cuda.get_device_name(0))
    GPU_CLOCK.reset()
    benchmark.pedantic(fn, setup=flush_and_spin, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["case"] = case.as_dict()
