"""Numbers computed from tensors: weight error against float64, memory of a quantized weight."""

from __future__ import annotations

import math

import torch

from quantbench.kernels.spec import FLOAT_DTYPES, QuantSpec


def _snr_db(signal: float, noise: float, factor: int) -> float:
    """factor * log10(signal / noise): +inf without noise, -inf for noise over no signal (a
    wrong answer to an all-zero reference is no signal at all, never a perfect one)."""
    if noise == 0:
        return math.inf
    return factor * math.log10(signal / noise) if signal > 0 else -math.inf


def weight_error(w: torch.Tensor, w_hat: torch.Tensor) -> dict[str, float]:
    """Error of w_hat against w, both taken to float64: the seed notebook's MSE, MAE, max error and
    SNR (10 log10 of mean(w^2) / MSE), plus the relative Frobenius error ||w - w_hat|| / ||w||."""
    ref = w.double()
    diff = w_hat.double() - ref
    mse = diff.square().mean().item()
    signal = ref.square().mean().item()
    ref_norm = ref.norm().item()
    return {
        "mse": mse,
        "mae": diff.abs().mean().item(),
        "max_abs_err": diff.abs().max().item(),
        "snr_db": _snr_db(signal, mse, 10),
        "rel_err": diff.norm().item() / ref_norm if ref_norm > 0 else (0.0 if mse == 0 else math.inf),
    }


def weight_memory(spec: QuantSpec, n: int, k: int, dtype: str) -> dict[str, float]:
    """Persistent bytes of the quantized [N, K] weight (codes + scales + zeros, scales stored in
    `dtype`), effective bits per weight, and compression against fp16 and fp32 storage."""
    nbytes = spec.nbytes(n, k, FLOAT_DTYPES[dtype])
    return {
        "weight_bytes": nbytes,
        "bits_per_weight": 8 * nbytes / (n * k),
        "compression_vs_fp16": 2 * n * k / nbytes,
        "compression_vs_fp32": 4 * n * k / nbytes,
    }


def mismatches(actual: torch.Tensor, expected: torch.Tensor, close: torch.Tensor | None = None,
               show: int = 3) -> str | None:
    """None when every element agrees (exactly, or where `close` is True); else a message with the
    count and the first mismatching positions."""
    bad = (actual != expected) if close is None else ~close
    count = int(bad.sum().item())
    if count == 0:
        return None
    where = bad.nonzero()[:show].tolist()
    first = ", ".join(f"{tuple(i)}: {actual[tuple(i)].item()} vs {expected[tuple(i)].item()}" for i in where)
    return f"{count} of {bad.numel()} elements differ (first {first})"


def dequant_close(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Elementwise agreement of two dequantizations of the same codes up to float rounding.

    q * s + z may be evaluated with one rounding (a fused multiply-add, as the GPU does) or two, and
    the result then rounded to the output dtype: allow one unit in the last place of the output
    dtype, plus float32 rounding of the terms (bounded by the largest output magnitude).
    """
    out_eps = torch.finfo(expected.dtype).eps
    a, e = actual.float(), expected.float()
    bound = out_eps * e.abs() + 4 * torch.finfo(torch.float32).eps * e.abs().max()
    return (a - e).abs() <= bound


def output_error(y: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(relative Frobenius error, SNR in dB) of an output against a float64 reference."""
    ref = ref.double()
    noise = (y.double() - ref).norm().item()
    signal = ref.norm().item()
    rel = noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)
    snr = _snr_db(signal, noise, 20)
    return rel, snr


def output_difference(y: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """The seed notebook's calculate_output_difference: mean and max absolute difference and the
    mean relative difference in percent (|diff| / (|ref| + 1e-8)), against a float64 output."""
    diff = (y.double() - ref.double()).abs()
    return {
        "out_mean_abs_diff": diff.mean().item(),
        "out_max_abs_diff": diff.max().item(),
        "out_mean_rel_diff_pct": (diff / (ref.double().abs() + 1e-8)).mean().item() * 100,
    }
