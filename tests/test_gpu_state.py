"""NVML readings, the GPU's state for meta.json, and the flags column, with a stand-in for NVML."""

import math

import pytest
import torch

from quantbench.harness.execution import gpu_monitor as gpu_state
from quantbench.harness.execution.row_flags import median_rse_of, row_flags
from quantbench.harness.execution.gpu_monitor import GpuMonitor, Reading, open_monitor, row_columns


class FakeNvml:
    """The pynvml functions the harness calls, answering from scripted SM clocks (one per
    reading, the last repeated) and fixed power and temperature."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    nvmlClocksEventReasonGpuIdle, nvmlClocksEventReasonSwPowerCap = 0x1, 0x4
    nvmlClocksEventReasonAll, nvmlClocksEventReasonNone = 0xFF, 0x0

    class NVMLError(Exception):
        pass

    def __init__(self, sm_clocks=(1980,), power_mw=700_000, ecc=(1, 1), unsupported=()):
        self.sm_clocks, self.power_mw, self.ecc, self.unsupported = list(sm_clocks), power_mw, ecc, unsupported
        self.inits = self.shutdowns = 0
        self.asked_uuid = None

    def _check(self, name):
        if name in self.unsupported:
            raise self.NVMLError(f"{name}: Not Supported")

    def nvmlInit(self):
        self._check("init")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.asked_uuid = uuid
        return "handle"

    def nvmlDeviceGetHandleByIndex(self, index):
        return "handle"

    def nvmlDeviceGetMaxClockInfo(self, h, clock):
        return 1980 if clock == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetClockInfo(self, h, clock):
        if clock == self.NVML_CLOCK_MEM:
            return 2619
        return self.sm_clocks.pop(0) if len(self.sm_clocks) > 1 else self.sm_clocks[0]

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("power")
        return self.power_mw

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 45

    def nvmlDeviceGetEccMode(self, h):
        self._check("ecc")
        return self.ecc

    def nvmlDeviceGetMigMode(self, h):
        self._check("mig")
        return (0, 0)

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return 700_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 650_000

    def nvmlDeviceGetApplicationsClock(self, h, clock):
        return 1755

    def nvmlDeviceGetPerformanceState(self, h):
        return 0

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x4

    def nvmlSystemGetDriverVersion(self):
        return "580.65.06"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlDeviceGetUUID(self, h):
        return "GPU-1234"


def test_row_columns_keep_the_lowest_clocks_and_the_highest_power_and_temperature():
    cols = row_columns([Reading(1980, 2619, 500.0, 40), Reading(1400, 2600, 690.0, 55),
                        Reading(None, None, None, None)])
    assert cols == {"sm_clock_mhz": 1400, "mem_clock_mhz": 2600, "power_w": 690.0, "temp_c": 55}
    assert row_columns([]) == {"sm_clock_mhz": None, "mem_clock_mhz": None, "power_w": None, "temp_c": None}


def test_watch_reads_as_the_block_ends_not_as_it_starts():
    fake = FakeNvml(sm_clocks=(1980,))
    monitor = GpuMonitor(fake, "handle")
    with monitor.watch(poll_s=None) as watch:
        fake.sm_clocks = [1200]  # the clocks drop while the case runs
    assert len(watch.readings) == 1 and watch.columns()["sm_clock_mhz"] == 1200
    assert watch.columns()["power_w"] == 700.0  # NVML gives milliwatts


def test_watch_polls_while_the_block_runs():
    import time
    monitor = GpuMonitor(FakeNvml(), "handle")
    with monitor.watch(poll_s=0.005) as watch:
        time.sleep(0.1)
    assert len(watch.readings) >= 3  # several polls and the last reading


def test_unsupported_queries_read_as_missing():
    monitor = GpuMonitor(FakeNvml(unsupported=("power", "ecc", "mig")), "handle")
    assert monitor.read().power_w is None
    state = monitor.state()
    assert state["ecc_enabled"] is None and state["mig_enabled"] is None and state["power_w"] is None
    assert state["sm_clock_mhz"] == 1980  # what is supported is still read


def test_state_for_meta():
    state = GpuMonitor(FakeNvml(ecc=(1, 0)), "handle").state()
    assert state["ecc_enabled"] is True and state["mig_enabled"] is False
    assert state["power_limit_w"] == 700.0 and state["enforced_power_limit_w"] == 650.0
    assert state["max_sm_clock_mhz"] == 1980 and state["max_mem_clock_mhz"] == 2619
    assert state["clock_event_reasons"] == ["SwPowerCap"]


def test_open_monitor_on_the_cpu_or_without_nvml_says_why():
    monitor, why = open_monitor(torch.device("cpu"))
    assert monitor is None and "no GPU" in why


def test_open_monitor_finds_the_gpu_by_uuid(monkeypatch):
    class Props:
        uuid = "abcd-ef"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    fake = FakeNvml()
    monitor, why = open_monitor(torch.device("cuda:0"), nvml=fake)
    assert why is None and fake.asked_uuid == "GPU-abcd-ef" and monitor.max_sm_clock_mhz == 1980
    monitor.close()
    assert fake.shutdowns == 1


def test_open_monitor_falls_back_to_the_pci_bus_id(monkeypatch):
    class Props:
        uuid, pci_domain_id, pci_bus_id, pci_device_id = "GPU-unknown", 0, 0x1B, 0

    class NoSuchUuid(FakeNvml):
        def nvmlDeviceGetHandleByUUID(self, uuid):
            raise self.NVMLError("Not Found")

        def nvmlDeviceGetHandleByPciBusId(self, bus_id):
            self.asked_bus = bus_id
            return "handle"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    fake = NoSuchUuid()
    monitor, why = open_monitor(torch.device("cuda:0"), nvml=fake)
    assert why is None and fake.asked_bus == "00000000:1B:00.0"


def test_open_monitor_when_nvml_cannot_start(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: None)
    monitor, why = open_monitor(torch.device("cuda:0"), nvml=FakeNvml(unsupported=("init",)))
    assert monitor is None and "NVML cannot read this GPU" in why and "Not Supported" in why

    def no_pynvml():
        raise ImportError("No module named 'pynvml'")
    monkeypatch.setattr(gpu_state, "_load_nvml", no_pynvml)
    monitor, why = open_monitor(torch.device("cuda:0"))
    assert monitor is None and "nvidia-ml-py is not installed" in why


def test_collect_env_records_nvml_state(monkeypatch):
    from quantbench.harness.execution import environment as env

    class Props:
        uuid, major, minor, multi_processor_count, total_memory, L2_cache_size = "ab", 9, 0, 132, 80 << 30, 50 << 20
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    e = env.collect_env(torch.device("cuda:0"), GpuMonitor(FakeNvml(), "handle"))
    assert e["driver"] == "580.65.06" and e["cuda_driver"] == "13.0" and e["sm_count"] == 132
    assert e["gpu_state_start"]["ecc_enabled"] is True and e["gpu_state_start"]["power_limit_w"] == 700.0
    assert e["hostname"] and "git_dirty" in e
    e = env.collect_env(torch.device("cuda:0"), None, "nvidia-ml-py is not installed")
    assert e["driver"] == "unknown (nvidia-ml-py is not installed)" and e["gpu_state_start"] is None


def stats(**kw):
    base = {"ms": 1.0, "ms_std": 0.01, "n_samples": 100, "timing_valid": True}
    return {**base, **kw}


@pytest.mark.parametrize("sm_clock, expected", [(1980, ""), (1486, ""), (1484, "throttled"), (None, "")])
def test_throttled_under_75_percent_of_the_maximum_sm_clock(sm_clock, expected):
    assert row_flags(stats(), sm_clock, 1980, target_rse=0.005) == expected  # 0.75 * 1980 = 1485


def test_noisy_when_the_median_is_not_known_to_the_target():
    # 1.2533 * 0.1 / sqrt(100) = 1.25% > 0.5%: noisy; with 10000 samples 0.125%: not
    assert median_rse_of(stats(ms_std=0.1)) == pytest.approx(0.012533)
    assert row_flags(stats(ms_std=0.1), 1980, 1980, target_rse=0.005) == "noisy"
    assert row_flags(stats(ms_std=0.1, n_samples=10000), 1980, 1980, target_rse=0.005) == ""
    assert row_flags(stats(ms_std=0.1), 1000, 1980, target_rse=0.005) == "throttled;noisy"
    assert row_flags(stats(n_samples=1), 1980, 1980, target_rse=0.005) == "noisy"  # one sample: unknown
    assert math.isinf(median_rse_of(stats(n_samples=1)))


def test_interpreter_rows_are_not_flagged():
    assert row_flags(stats(ms_std=1.0, timing_valid=False), 100, 1980, target_rse=0.005) == ""


def test_measured_rows_carry_the_clock_columns(monkeypatch):
    """_measure_rows with a stand-in monitor on the CPU: the clocks go on the timed row."""
    from quantbench.harness.execution import case as runner
    from quantbench.harness.execution.cases import Case
    from quantbench.harness.config import parse_config
    from quantbench.harness.ops.inputs import InputSource
    from quantbench.harness.ops import OPS

    cfg = parse_config({"name": "t", "timing": {"cpu_reps": 2},
                        "sweep": {"op": "dequantize", "bits": 4, "N": [8], "K": [64]}})
    case = Case("dequantize", "torch", 4, "asymmetric", "channel", None, "float16", None, 8, 64, None)
    from quantbench.harness.registry import load_registry
    op, impl = OPS["dequantize"], load_registry(entry_points=False).get("dequantize", "torch")
    inputs = op.prepare(case, InputSource(cfg.weights, 0, "cpu"))
    ref = impl.factory(inputs)()
    monitor = GpuMonitor(FakeNvml(sm_clocks=(1300,)), "handle")
    (row,) = runner.measure_case(op, impl, case, inputs, ref, None, cfg, torch.device("cpu"), {}, monitor)
    assert row["sm_clock_mhz"] == 1300 and row["temp_c"] == 45 and row["power_w"] == 700.0
    assert row["flags"] == "" and row["peak_mem_bytes"] is None  # CPU: not a GPU timing, no allocator
    assert row["pct_peak_flops"] is None


def test_summary_counts_flagged_rows_and_states_the_matmul_ceilings():
    from quantbench.harness.results import to_frame
    from quantbench.harness.analysis.tables import summary_markdown
    rows = [{"op": "dequantize", "impl": "triton", "status": "ok", "timing_valid": True, "flags": "throttled;noisy"},
            {"op": "dequantize", "impl": "torch", "status": "ok", "timing_valid": True, "flags": "noisy"},
            {"op": "dequantize", "impl": "torch", "status": "ok", "timing_valid": True, "flags": ""}]
    md = summary_markdown(to_frame(rows), {"calibration": {"fp16_tflops": 700.2, "int8_tops": None,
                                                           "matmul_size": 8192}})
    assert "noisy 2, throttled 1" in md and "8192^3): fp16 700;" in md  # int8 not measured: not listed
