"""The weights a run quantized, drawn again on the CPU, for the panels that show weights themselves.

A run stores numbers about its weights, not the weights. They are deterministic (inputs.py: the
run's seed, the shape, the layer), so the report draws the run's smallest weight matrix again from
meta.json's config and quantizes it with the PyTorch reference (quantize_ref / dequantize_ref,
whose codes equal the Triton kernel's bit for bit). Each format's SNR is recomputed on the whole
matrix and printed next to the run's own `snr_db`, so the reader can see that the regenerated
weights are the measured ones. The panels then use an evenly strided subsample of the elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from pydantic import ValidationError

from quantbench.kernels.spec import QuantSpec

from ..analysis.labels import format_label, format_order
from .figures import NoData, format_rows

SUBSAMPLE = 1 << 18  # elements kept for histograms: plenty for a smooth density
ROW_SAMPLE = 64  # leading weights of row 0 drawn one by one
WEIGHT_OPS = ("quantize", "dequantize", "matmul", "stack", "matmul_w8a8")


@dataclass(frozen=True)
class QuantizedSample:
    spec: QuantSpec
    label: str
    w_hat: torch.Tensor  # float32, the subsample's dequantized values
    row: torch.Tensor  # float32, dequantized row 0, first ROW_SAMPLE elements
    snr_db: float  # of the whole matrix, dequantized as the run's op does
    run_snr_db: float | None  # the run's snr_db for this format and shape (None where it has none)


@dataclass(frozen=True)
class WeightSample:
    shape: str
    n: int
    k: int
    dtype: str
    stride: int  # every stride-th element of the flattened matrix is in `w`
    w: torch.Tensor  # float32, the subsample of the original weights
    row: torch.Tensor  # float32, row 0, first ROW_SAMPLE elements
    formats: list[QuantizedSample]


def _weights_config(meta: dict):
    from ..config import NormalWeights, SafetensorsWeights
    cfg = meta.get("config")
    if not cfg:
        raise NoData("meta.json holds no config: the run's weights cannot be drawn again")
    weights = cfg.get("weights") or {"source": "normal"}  # the config's default
    try:
        model = SafetensorsWeights if weights.get("source") == "safetensors" else NormalWeights
        return model.model_validate(weights), int(cfg.get("seed", 0))
    except ValidationError as e:  # e.g. a checkpoint that is not on this machine
        raise NoData(f"the run's weights cannot be drawn again here: {e.errors()[0]['msg']}") from None


def _none_if_nan(v):
    return None if v is None or pd.isna(v) else v


def sample_weights(df: pd.DataFrame, meta: dict) -> WeightSample:
    """The run's smallest weight matrix (layer 0, the dtype most of its rows use), quantized in
    every format the run measured on it; NoData where the run quantized nothing."""
    from quantbench.kernels import dequantize_ref, quantize_ref

    from ..ops.inputs import make_weights
    from ..ops.metrics import weight_error
    # the case's own format: not the dense baseline's rows (inf SNR), not a library's own format
    rows = format_rows(df[df["op"].isin(WEIGHT_OPS) & df["bits"].notna() & df["N"].notna() & (df["status"] == "ok")])
    if rows.empty:
        raise NoData("the run has no ok rows of a quantized weight")
    weights, seed = _weights_config(meta)
    rows = rows.assign(_size=rows["N"].astype(float) * rows["K"].astype(float))
    small = rows[rows["_size"] == rows["_size"].min()]
    first = small.iloc[0]
    n, k, name = int(first["N"]), int(first["K"]), _none_if_nan(first["shape_name"])
    dtype = small["dtype"].value_counts().index[0]
    small = small[small["dtype"] == dtype]
    w = make_weights(weights, seed, n, k, dtype, "cpu", name)
    stride = max(1, w.numel() // SUBSAMPLE)
    flat_w = w.reshape(-1)[::stride].float()
    keys = ["bits", "scheme", "granularity", "group_size"]
    formats = []
    for key, group in small.groupby(keys, dropna=False, sort=False):
        bits, scheme, gran, gs = key
        spec = QuantSpec(int(bits), scheme, gran, None if pd.isna(gs) else int(gs))
        q = quantize_ref(w, spec)
        w_hat = dequantize_ref(q, torch.float32)
        # quantize and dequantize rows judge W_hat as the kernel returns it (in the weight's dtype);
        # products judge the float32 W_hat that the kernels multiply with (ops.py): recomputed as
        # the row whose snr_db is shown judged it
        with_snr = group[group["snr_db"].notna()]
        run_snr = with_snr["snr_db"]
        op_first = (with_snr if len(with_snr) else group)["op"].iloc[0]
        judged = dequantize_ref(q) if op_first in ("quantize", "dequantize") else w_hat
        snr = weight_error(w, judged)["snr_db"]
        formats.append(QuantizedSample(spec, format_label(*key), w_hat.reshape(-1)[::stride].clone(),
                                       w_hat[0, :ROW_SAMPLE].clone(), snr,
                                       float(run_snr.iloc[0]) if len(run_snr) else None))
        del q, w_hat, judged
    formats.sort(key=lambda f: (-f.spec.bits, f.spec.scheme, format_order(f.spec.granularity, f.spec.group_size)))
    shape = f"{name} {n}x{k}" if name else f"{n}x{k}"
    return WeightSample(shape, n, k, dtype, stride, flat_w, w[0, :ROW_SAMPLE].float(), formats)


def headline(formats: list[QuantizedSample]) -> dict[int, QuantizedSample]:
    """One format per bit width for the panels that show one: the run's asymmetric (the seed's
    scheme) format closest to what deployed models use (groups of 128, else the finest)."""
    out: dict[int, QuantizedSample] = {}
    for f in formats:
        best = out.get(f.spec.bits)
        if best is None or _preference(f) < _preference(best):
            out[f.spec.bits] = f
    return out


def _preference(f: QuantizedSample) -> tuple:
    s = f.spec
    gran_rank = {"group": 0, "channel": 1, "tensor": 2}[s.granularity]
    return (s.symmetric, gran_rank, abs((s.group_size or 128) - 128))
