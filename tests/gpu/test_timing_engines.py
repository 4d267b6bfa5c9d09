"""Every timing engine on kernels whose duration is known without it.

- A sleep kernel (`torch.cuda._sleep`, a spin of a given number of GPU cycles): its duration is
  measured first as the GPU time of many back-to-back sleeps between two events; each engine's
  median must come within TOLERANCE of it.
- The same sleep behind a host delay (the launcher's Python work, made long on purpose): the
  engines that promise not to time the launch (do_bench with its spin, adaptive, cuda_graph)
  must still read the sleep alone. A control shows that two events around the call would have
  timed the delay too, so the check can fail.
- A chain of dependent loads through a buffer that fits in the L2 (a pointer chase, one load
  waiting for the one before, so its time is the memory's latency times the links): after a
  flush every link comes from HBM, otherwise from the L2, much faster (the control checks that
  it is). The flushing engines must read the cold time.
- A copy of a buffer many times the L2 against the calibrated copy rate: the engines time a
  bandwidth-bound kernel at the rate the run's ceilings are measured with.
"""

import time

import pytest
import torch
import triton
import triton.language as tl

from quantbench.harness.execution.calibration import copy_bandwidth_gbps
from quantbench.harness.config import Timing
from quantbench.harness.execution.timing import measure

CUDA = torch.device("cuda")
SLEEP_US = 100.0
HOST_DELAY_US = 300.0  # under the engine's spin (1M cycles, ~0.5 ms), far over the sleep
TOLERANCE = 0.05  # of the sleep's duration
ENGINES = {
    "do_bench": Timing(),
    "do_bench-unflushed": Timing(flush_l2=False),
    "adaptive": Timing(engine="adaptive", min_time_ms=100, max_time_ms=2000),
    "cuda_graph": Timing(engine="cuda_graph"),
}
SHIELDED = ["do_bench", "adaptive", "cuda_graph"]  # engines that promise not to time the launch
CHASE_STEPS = 2048
L2_EFFECT = 1.5  # the chase from HBM must take at least this many times its time from L2
CHASE_TOLERANCE = 0.15  # of the chase's cold time: HBM latency varies more than a sleep does
COPY_BYTES = 1 << 29  # 512 MiB each way: L2 and launch play no part
COPY_TOLERANCE = 0.10  # of the time the calibrated copy rate gives (the calibration copies 1 GiB)


def gpu_ms(fn, calls: int = 1) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


@pytest.fixture(scope="module")
def sleep():
    """(a zero-argument call that sleeps ~SLEEP_US on the GPU, its duration in ms)."""
    torch.cuda.synchronize()
    probe_cycles = 20_000_000
    gpu_ms(lambda: torch.cuda._sleep(probe_cycles))  # warm up
    cycles_per_ms = probe_cycles / min(gpu_ms(lambda: torch.cuda._sleep(probe_cycles)) for _ in range(3))
    cycles = int(cycles_per_ms * SLEEP_US / 1e3)
    call = lambda: torch.cuda._sleep(cycles)
    duration_ms = min(gpu_ms(call, calls=200) for _ in range(3))  # back to back: the GPU never waits
    print(f"\nsleep: {cycles} cycles, {duration_ms * 1e3:.2f} us ({cycles_per_ms / 1e3:.0f} cycles/us)")
    return call, duration_ms


def busy_wait_us(us: float) -> None:
    until = time.perf_counter() + us / 1e6
    while time.perf_counter() < until:
        pass


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_times_a_sleep_of_known_duration(engine, sleep):
    call, duration_ms = sleep
    m = measure(call, CUDA, ENGINES[engine]).stats()
    print(f"{engine}: median {m['ms'] * 1e3:.2f} us over {m['n_samples']} samples (expected {duration_ms * 1e3:.2f})")
    assert m["timing_valid"] and m["n_samples"] >= 10
    assert abs(m["ms"] - duration_ms) <= TOLERANCE * duration_ms, \
        f"{engine}: median {m['ms'] * 1e3:.2f} us, the sleep takes {duration_ms * 1e3:.2f} us"


@pytest.mark.parametrize("engine", SHIELDED)
def test_a_slow_launcher_is_not_timed(engine, sleep):
    call, duration_ms = sleep

    def slow_launch():
        busy_wait_us(HOST_DELAY_US)
        call()

    # the control: events around the call time the host's delay as well (the GPU waits for it)
    gpu_ms(slow_launch)
    control = min(gpu_ms(slow_launch) for _ in range(5))
    assert control >= duration_ms + 0.8 * HOST_DELAY_US / 1e3, f"control {control * 1e3:.1f} us: no gap to hide"
    m = measure(slow_launch, CUDA, ENGINES[engine]).stats()
    print(f"{engine} behind a {HOST_DELAY_US:.0f} us launch: median {m['ms'] * 1e3:.2f} us "
          f"(sleep {duration_ms * 1e3:.2f} us, control {control * 1e3:.1f} us)")
    assert abs(m["ms"] - duration_ms) <= TOLERANCE * duration_ms, \
        f"{engine}: median {m['ms'] * 1e3:.2f} us, the sleep takes {duration_ms * 1e3:.2f} us: the launch was timed"


@triton.jit
def chase_kernel(next_ptr, out_ptr, STEPS: tl.constexpr):
    """Follow STEPS links of a chain through next_ptr, one dependent load after another (one
    program): each step waits for the one before, so the time is STEPS memory latencies."""
    i = tl.load(next_ptr, cache_modifier=".cg")  # past L1: only the L2 or HBM answers
    for _ in range(STEPS - 1):
        i = tl.load(next_ptr + i, cache_modifier=".cg")
    tl.store(out_ptr, i)


@pytest.fixture(scope="module")
def chase():
    """(a call that follows a chain of CHASE_STEPS links, each on its own 128-byte line, in
    random order, through a buffer of a quarter of the L2; its time from HBM; its time from L2),
    both timed by hand: after zeroing a buffer twice the L2, and right after another chase."""
    l2 = torch.cuda.get_device_properties(CUDA).L2_cache_size
    line = 128 // 4  # int32 elements per 128-byte line
    # line 0 holds the chain's start, so it is not on the chain
    lines = 1 + torch.randperm(l2 // 4 // 4 // line - 1, generator=torch.Generator().manual_seed(0))[:CHASE_STEPS]
    positions = (lines * line).tolist()
    links = torch.zeros(l2 // 4 // 4, dtype=torch.int32)
    links[0] = positions[0]
    for here, there in zip(positions, positions[1:]):
        links[here] = there
    links = links.to(CUDA)
    out = torch.empty(1, dtype=torch.int32, device=CUDA)
    call = lambda: chase_kernel[(1,)](links, out, STEPS=CHASE_STEPS)
    call()
    torch.cuda.synchronize()
    assert out.item() == positions[CHASE_STEPS - 1], "the chain was not followed to its end"
    flush = torch.empty(2 * l2 // 4, dtype=torch.int32, device=CUDA)
    cold, warm = [], []
    for _ in range(10):
        flush.zero_()
        cold.append(gpu_ms(call))
        warm.append(gpu_ms(call))
    cold_ms, warm_ms = sorted(cold)[5], sorted(warm)[5]
    print(f"\nchase of {CHASE_STEPS} lines: {cold_ms * 1e3:.1f} us after a flush, {warm_ms * 1e3:.1f} us from L2")
    return call, cold_ms, warm_ms


@pytest.mark.parametrize("engine", ["do_bench", "adaptive", "cuda_graph"])
def test_flushed_engines_time_a_cold_l2(engine, chase):
    call, cold_ms, warm_ms = chase
    # the control: from L2 the chase is much faster, so an engine that did not flush would show it
    assert cold_ms >= L2_EFFECT * warm_ms, f"cold {cold_ms * 1e3:.1f} us, warm {warm_ms * 1e3:.1f} us: no L2 effect"
    m = measure(call, CUDA, ENGINES[engine]).stats()["ms"]
    print(f"{engine}: chase median {m * 1e3:.1f} us (cold {cold_ms * 1e3:.1f}, warm {warm_ms * 1e3:.1f})")
    assert abs(m - cold_ms) <= CHASE_TOLERANCE * cold_ms, \
        f"{engine}: {m * 1e3:.1f} us, the chase takes {cold_ms * 1e3:.1f} us from HBM and {warm_ms * 1e3:.1f} us from L2"


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_large_copy_runs_at_the_calibrated_rate(engine):
    src = torch.ones(COPY_BYTES // 4, dtype=torch.float32, device=CUDA)
    dst = torch.empty_like(src)
    expected_ms = 2 * COPY_BYTES / (copy_bandwidth_gbps(CUDA) * 1e9) * 1e3
    # an elementwise kernel, not copy_: a contiguous copy_ captured in a CUDA graph becomes a memcpy
    # node, which the copy engines run (2.76 TB/s on an H200, against 4.25 for the SMs' copy)
    m = measure(lambda: torch.mul(src, 1.0, out=dst), CUDA, ENGINES[engine]).stats()["ms"]
    print(f"{engine}: copy of {COPY_BYTES >> 20} MiB median {m * 1e3:.1f} us, {expected_ms * 1e3:.1f} us at the calibrated rate")
    assert abs(m - expected_ms) <= COPY_TOLERANCE * expected_ms


def test_host_us_is_the_launchers_time_not_the_gpus(sleep):
    """A 100 us GPU sleep costs the host only its launch; the same behind 300 us of host work costs
    300 us more, and none of the GPU's time shows."""
    from quantbench.harness.execution.host_time import host_time
    call, duration_ms = sleep
    bare = host_time(call, CUDA)
    slow = host_time(lambda: (busy_wait_us(300), call()), CUDA)
    print(f"host_us: bare launch {bare.us:.1f} us, behind 300 us of host work {slow.us:.1f} us "
          f"(F.linear beside them {bare.linear_us:.1f} and {slow.linear_us:.1f} us)")
    assert bare.us < 0.5 * duration_ms * 1e3  # the launch, not the sleep
    assert slow.us - bare.us == pytest.approx(300, rel=0.1)


def test_f_linear_timed_against_itself_reads_one():
    """host_linear_us's anchor timed as a row's own call: the two medians, from alternating
    batches, agree, so a ratio far from 1 on a row is the row's call and not the method."""
    from quantbench.harness.execution.host_time import host_time, linear_anchor
    measured = host_time(linear_anchor(CUDA), CUDA)
    print(f"host_us: F.linear {measured.us:.1f} us against itself {measured.linear_us:.1f} us")
    assert measured.us / measured.linear_us == pytest.approx(1.0, abs=0.15)
