"""The columns of a run's table, and the keys of meta.json that rows are read against.

The columns are a public interface (runs are compared across versions): any change to them bumps
SCHEMA_VERSION, and older runs still load (missing columns read as missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config.schema import AXES

# 2: pct_peak_flops, the clock columns, flags and peak_mem_bytes (runs of version 1 read them as missing)
# 3: role (runs before it get the built-ins' roles by name when read: LEGACY_ROLES)
# 4: host_us and path (runs before it read them as missing)
# 5: host and gpu_uuid, the machine and GPU that measured the row (a sweep may run over several)
# 6: kernel_config, the launch configuration (the autotuner's choice) the implementation ran
# 7: host_linear_us, F.linear's host time per call in the same moments as the row's host_us
SCHEMA_VERSION = 7

# a row's identity: the sweep's axes (the config's, in their order), then the stack's depth and the
# shape's name, then where it ran and how it ended
IDENTITY = ["run_id", *AXES, "depth", "shape_name", "device", "gpu", "status", "message"]
# role: the implementation's role (reference, candidate, peer, baseline: harness/registry), which
# decides what a table shows as its subject and its dense baseline; path: the kernel variant the
# implementation ran for this case where it picks one by shape (Impl.path); kernel_config: how that
# kernel was launched, its tile, split, warps and stages (Impl.kernel_config); none is part of a
# case's identity
IMPLEMENTATION = ["role", "path", "kernel_config"]
# runs written before the role column (schema < 3) knew only the built-ins, whose roles were these
LEGACY_ROLES = {"triton": "candidate", "torch": "reference", "fp16": "baseline", "torch_compile": "peer",
                "tinygemm": "peer", "int_mm": "peer"}
# first_call_ms: the untimed first call, which compiles (Triton, torch.compile) and autotunes
# intensity: FLOPs per byte moved; pct_peak_bw: gbps against the run's measured copy bandwidth;
# pct_peak_flops: tflops against the run's measured matmul rate for the op's arithmetic (each op's flops_ceiling, harness/ops)
# host_us: the CPU time of one call while the GPU is kept busy (it only enqueues): what a caller
# pays on the host per call, beside the GPU time; host_linear_us: a fixed float16 F.linear's, timed
# in batches alternating with the row's own, so that host_us / host_linear_us does not move with
# the host's speed (execution/host_time.py)
# the F.linear call host_linear_us times: M, N, K, float16 (a GEMV-sized product: its host cost is
# cuBLAS's dispatch and launch; its GPU time, a few microseconds, never shows behind the spin)
HOST_ANCHOR_SHAPE = (1, 1024, 1024)
TIME = ["ms", "ms_p20", "ms_p80", "ms_min", "ms_mean", "ms_std", "cv", "n_samples", "timing_valid",
        "gbps", "tflops", "intensity", "pct_peak_bw", "pct_peak_flops", "first_call_ms", "host_us",
        "host_linear_us"]
# read through NVML while the row was timed (execution/gpu_monitor.py): lowest clocks, highest power and
# temperature; flags: reasons to distrust the time, semicolon-joined (execution/row_flags.py)
CLOCKS = ["sm_clock_mhz", "mem_clock_mhz", "power_w", "temp_c"]
FLAGS = ["flags"]
# peak_mem_bytes: the allocator's high-water mark during one call, above what was allocated before it
MEMORY = ["weight_bytes", "bits_per_weight", "compression_vs_fp16", "compression_vs_fp32", "peak_mem_bytes"]
ERROR = ["mse", "mae", "max_abs_err", "snr_db", "rel_err"]
# matmul and stack rows: the method's error (float64 output with W_hat against the one with W), the
# kernel's error (its output against the float64 output with the same W_hat), the total error
# relative to the output's norm, and the seed's output metrics (all against the float64 output)
OUTPUT_ERROR = ["method_rel_err", "method_snr_db", "kernel_rel_err", "kernel_snr_db", "out_rel_err",
                "out_mean_abs_diff", "out_max_abs_diff", "out_mean_rel_diff_pct"]
PROVENANCE = ["schema_version", "torch_version", "triton_version", "utc", "host", "gpu_uuid"]
COLUMNS = IDENTITY + IMPLEMENTATION + TIME + CLOCKS + FLAGS + MEMORY + ERROR + OUTPUT_ERROR + PROVENANCE

# A case's identity within a run: what joins one run's row to another's (compare, merge)
CASE_KEY = [c for c in IDENTITY if c not in ("run_id", "device", "gpu", "status", "message")]

# meta.json `calibration` (execution/calibration.py): the key of the matmul ceiling each activation
# dtype's products run at, and of the int8 one (see each op's flops_ceiling)
DTYPE_CEILING = {"float16": "fp16_tflops", "bfloat16": "bf16_tflops", "float32": "fp32_tflops"}
INT8_CEILING = "int8_tops"


@dataclass(frozen=True)
class Measurement:
    samples_ms: tuple[float, ...]
    valid: bool  # a GPU timing; False for interpreter wall-clock times

    def stats(self) -> dict[str, Any]:
        """Median, 20th and 80th percentiles, min, mean, standard deviation (n - 1), count and
        coefficient of variation (std / mean) of the samples."""
        s = np.asarray(self.samples_ms, dtype=np.float64)
        mean = float(s.mean())
        std = float(s.std(ddof=1)) if s.size > 1 else 0.0
        return {
            "ms": float(np.median(s)),
            "ms_p20": float(np.percentile(s, 20)),
            "ms_p80": float(np.percentile(s, 80)),
            "ms_min": float(s.min()),
            "ms_mean": mean,
            "ms_std": std,
            "cv": std / mean if mean > 0 else None,
            "n_samples": int(s.size),
            "timing_valid": self.valid,
        }
