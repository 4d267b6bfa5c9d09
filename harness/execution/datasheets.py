"""Published peak figures of known GPUs, recorded in meta.json beside the run's measured ceilings so
that runs on different GPUs can be normalised by what each is sold as, not only by what it measured.

Dense rates (NVIDIA quotes tensor-core rates "with sparsity": those are halved here), fp16 and bf16
with float32 accumulation (what PyTorch and Triton matmuls use; GeForce cards run fp16 with
float16 accumulation at twice that), fp32 on the CUDA cores (no TF32), int8 with int32
accumulation. Memory bandwidth in GB/s (10^9 bytes per second).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Datasheet:
    model: str
    pattern: str  # a regular expression that the whole of torch's device name matches
    hbm_gbps: float
    fp16_tflops: float
    bf16_tflops: float
    fp32_tflops: float
    int8_tops: float
    source: str


H100_SOURCE = "NVIDIA H100 Tensor Core GPU datasheet (SXM5), sparse rates halved"
A100_SOURCE = "NVIDIA A100 Tensor Core GPU datasheet, sparse rates halved"

DATASHEETS = (
    Datasheet("H100 SXM5 80GB", r"NVIDIA H100 (80GB HBM3|SXM5? 80GB)", 3350, 989.5, 989.5, 67, 1979,
              H100_SOURCE),
    Datasheet("H200 SXM 141GB", r"NVIDIA H200", 4800, 989.5, 989.5, 67, 1979,
              "NVIDIA H200 Tensor Core GPU datasheet (SXM), sparse rates halved"),
    Datasheet("A100 SXM4 80GB", r"NVIDIA A100-SXM4-80GB", 2039, 312, 312, 19.5, 624, A100_SOURCE),
    Datasheet("A100 SXM4 40GB", r"NVIDIA A100-SXM4-40GB", 1555, 312, 312, 19.5, 624, A100_SOURCE),
    Datasheet("A100 PCIe 80GB", r"NVIDIA A100 80GB PCIe", 1935, 312, 312, 19.5, 624, A100_SOURCE),
    Datasheet("A100 PCIe 40GB", r"NVIDIA A100-PCIE-40GB", 1555, 312, 312, 19.5, 624, A100_SOURCE),
    Datasheet("L4", r"NVIDIA L4", 300, 121, 121, 30.3, 242.5,
              "NVIDIA L4 Tensor Core GPU datasheet, sparse rates halved"),
    Datasheet("GeForce RTX 4090", r"NVIDIA GeForce RTX 4090", 1008, 165.2, 165.2, 82.6, 660.6,
              "NVIDIA Ada Lovelace architecture whitepaper, appendix A (fp16 with fp32 accumulate)"),
)


def datasheet_for(gpu_name: str) -> Datasheet | None:
    """The entry whose pattern matches the whole device name; None for a GPU not in the table
    (an H100 PCIe or NVL, an H200 NVL, an L40: other memory and clocks than the ones listed)."""
    for sheet in DATASHEETS:
        if re.fullmatch(sheet.pattern, gpu_name.strip()):
            return sheet
    return None


def datasheet_meta(gpu_name: str) -> dict | None:
    """The figures recorded in meta.json (`datasheet`), or None for a GPU not in the table."""
    sheet = datasheet_for(gpu_name)
    return None if sheet is None else {k: v for k, v in asdict(sheet).items() if k != "pattern"}
