"""The seed notebook's six panels, done right: weights and their quantization error, memory per
format with scale and zero overhead, error against depth, and which models fit which GPUs.

Each function returns a Figure or raises NoData naming what the run lacks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from quantbench.kernels.spec import DQ_CHUNK, FLOAT_DTYPES, SCHEMES, QuantSpec

from ..analysis.labels import format_label, format_order, shape_label
from .figures import BITS_COLORS, NoData, format_rows, impl_colors, impls_by_role, new_figure
from .weight_draws import WeightSample, headline

MIB = 1 << 20
GRANULARITY_STYLES = {"tensor": ":", "channel": "--", "group": "-"}


def _grid(sample: WeightSample) -> tuple[list[str], list[int], dict[tuple[str, int], list]]:
    """Schemes (rows) x bit widths (columns), and the formats of each cell, coarse to fine."""
    cells: dict[tuple[str, int], list] = {}
    for f in sample.formats:
        cells.setdefault((f.spec.scheme, f.spec.bits), []).append(f)
    schemes = [s for s in SCHEMES if any(k[0] == s for k in cells)]
    bits = sorted({k[1] for k in cells}, reverse=True)
    return schemes, bits, cells


def _granularity_color(f) -> str:
    """The same colour for a granularity in every panel: tensor, channel, then groups by size."""
    if f.spec.granularity != "group":
        return {"tensor": "tab:blue", "channel": "tab:orange"}[f.spec.granularity]
    return {256: "tab:purple", 128: "tab:green", 64: "tab:brown", 32: "tab:red"}[f.spec.group_size]


def _panels(sample: WeightSample, height: float):
    schemes, bits, cells = _grid(sample)
    fig = new_figure(max(7.5, 0.4 + 4.0 * len(bits)), 0.6 + height * len(schemes))  # 7.5: room for the title
    axes = fig.subplots(len(schemes), len(bits), squeeze=False)
    return fig, [(axes[i][j], scheme, b, cells.get((scheme, b), [])) for i, scheme in enumerate(schemes)
                 for j, b in enumerate(bits)]


def weight_distribution(sample: WeightSample):
    """Per scheme and bit width: the density of the original weights and of each format's
    dequantized weights. Log density, so that the tails (where coarse formats clip) stay visible."""
    fig, panels = _panels(sample, 3.0)
    w = sample.w.numpy()
    bins = np.linspace(w.min(), w.max(), 121)
    for ax, scheme, bits, formats in panels:
        if not formats:
            ax.set_visible(False)
            continue
        heights, _, _ = ax.hist(w, bins=bins, density=True, color="0.8", label="original")
        top = heights.max()
        for f in formats:
            h, _, _ = ax.hist(f.w_hat.numpy(), bins=bins, density=True, histtype="step", linewidth=1.2,
                              color=_granularity_color(f), label=f.label)
            top = max(top, h.max())
        ax.set_yscale("log")
        ax.set_ylim(top=top * 300)  # room above the peak for the legend
        ax.set_title(f"{bits}-bit {scheme}")
        ax.set_xlabel("weight value")
        ax.legend(loc="upper left", fontsize=7, ncols=2)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("density (log)")
    fig.suptitle(f"Weight distribution, original (grey) and dequantized: {sample.shape} {sample.dtype}, "
                 f"every {sample.stride}th weight")
    return fig


def error_histograms(sample: WeightSample):
    """Per scheme and bit width: the distribution of W_hat - W for each format, with its SNR.
    A format that reconstructs many weights exactly (asymmetric: each segment's minimum is its
    zero point) puts a spike at 0; the axis is cut above the rest of the distribution and the
    spike's share is written on the panel."""
    fig, panels = _panels(sample, 3.0)
    w = sample.w.numpy()
    for ax, scheme, bits, formats in panels:
        if not formats:
            ax.set_visible(False)
            continue
        errors = [f.w_hat.numpy() - w for f in formats]
        lim = max(float(np.abs(e).max()) for e in errors) or 1.0
        bins = _error_bins(lim, w, sample.dtype)
        centre = len(bins) // 2 - 1
        top, cut = 0.0, False
        for f, e in zip(formats, errors, strict=True):
            h, _ = np.histogram(e, bins=bins, density=True)
            rest = np.delete(h, centre)
            top = max(top, rest.max())
            spike = h[centre] > 1.3 * rest.max()
            cut |= spike
            exact = f", {100 * np.mean(e == 0):.1f}% exact" if spike else ""
            ax.stairs(h, bins, linewidth=1.2, color=_granularity_color(f), label=f"{f.label}: {f.snr_db:.1f} dB{exact}")
        ax.set_ylim(0, top * 1.7)  # room above for the legend; a spike at 0 is cut
        ax.legend(loc="upper right", fontsize=6.5, title_fontsize=6.5,
                  title="format: SNR" + (" (spike at 0 cut: weights reconstructed exactly)" if cut else ""))
        ax.set_title(f"{bits}-bit {scheme}")
        ax.set_xlabel("dequantized - original")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("density")
    fig.suptitle(f"Quantization error: {sample.shape} {sample.dtype}, every {sample.stride}th weight")
    return fig


def _error_bins(lim: float, w: np.ndarray, dtype: str, target: int = 61) -> np.ndarray:
    """About `target` bins over [-lim, lim], an odd number with zero in the middle of the centre
    one, each a whole number of the weights' ulp. Errors sit on the grid of the weight dtype (W
    is float16, say): bins that are not whole multiples of that grid catch alternately more and
    fewer grid points and the histogram shows a comb that is not in the data."""
    import torch
    typical = float(np.quantile(np.abs(w), 0.99)) or 1.0
    ulp = torch.finfo(FLOAT_DTYPES[dtype]).eps * 2.0 ** np.floor(np.log2(typical))
    width = np.ceil(2 * lim / target / ulp) * ulp
    count = int(np.ceil(2 * lim / width)) | 1
    return (np.arange(count + 1) - count / 2) * width


def weight_row(sample: WeightSample):
    """The first weights of row 0, original against dequantized, one panel per bit width."""
    chosen = headline(sample.formats)
    fig = new_figure(max(7.5, 0.4 + 4.0 * len(chosen)), 3.2)
    axes = fig.subplots(1, len(chosen), squeeze=False, sharey=True)[0]
    index = np.arange(len(sample.row))
    for ax, (bits, f) in zip(axes, sorted(chosen.items(), reverse=True), strict=True):
        ax.plot(index, sample.row.numpy(), "-", color="black", linewidth=1.2)
        ax.plot(index, f.row.numpy(), "o", markersize=3.5, color=BITS_COLORS.get(bits))
        ax.set_title(f"{bits}-bit: {f.label}")
        ax.set_xlabel("column k of row 0")
    axes[0].set_ylabel("weight value")
    fig.suptitle(f"A sample of weights, {sample.shape} {sample.dtype}: original (black line) and dequantized (dots)")
    return fig


def memory_parts(spec: QuantSpec, n: int, k: int, dtype: str) -> tuple[int, int, int]:
    """(codes, scales, zeros) bytes of a quantized [N, K] weight; they sum to QuantSpec.nbytes,
    the results' weight_bytes (nf4_dq: its scales are the 8-bit scale codes with the float32
    second level, chunk scales and mean)."""
    codes = n * spec.packed_cols(k)
    rows, cols = spec.scales_shape(n, k)
    if spec.double_quant:
        return codes, rows * cols + 4 * math.ceil(rows * cols / DQ_CHUNK) + 4, 0
    params = rows * cols * torch_bytes(dtype)
    return codes, params, 0 if spec.symmetric else params


def torch_bytes(dtype: str) -> int:
    import torch
    return torch.finfo(FLOAT_DTYPES[dtype]).bits // 8


W8A8_OP = "matmul_w8a8"  # int8 codes per channel with float32 scales (kernels/w8a8.py), not the weight's dtype


def memory_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per format measured on the run's largest shape: the run's own weight_bytes and
    bits_per_weight of one layer's weight, and their split into codes, scales and zeros, after the
    dense fp32 and fp16 sizes."""
    d = df[df["bits"].notna() & df["weight_bytes"].notna() & df["N"].notna()]
    d = format_rows(d)
    if d.empty:
        raise NoData("the run has no rows with a quantized weight's size (weight_bytes)")
    size = d["N"].astype(float) * d["K"].astype(float)
    d = d[size == size.max()]
    first = d.iloc[0]
    n, k = int(first["N"]), int(first["K"])
    stack = (d["op"] == "stack") & d["layers"].notna()
    # a stack's weight_bytes are all its layers'; one weight is one layer's
    d = d.assign(weight_bytes=d["weight_bytes"].astype(float) / d["layers"].where(stack, 1).astype(float),
                 _w8a8=d["op"] == W8A8_OP)
    keys = ["bits", "scheme", "granularity", "group_size", "dtype", "_w8a8"]
    d = d.drop_duplicates(keys)
    d = d.iloc[sorted(range(len(d)), key=lambda i: (-d["bits"].iloc[i], d["scheme"].iloc[i],
                                                    format_order(d["granularity"].iloc[i], d["group_size"].iloc[i]),
                                                    bool(d["_w8a8"].iloc[i])))]
    several_dtypes = d["dtype"].nunique() > 1
    rows = [{"format": "fp32", "codes": 4 * n * k, "scales": 0, "zeros": 0, "weight_bytes": 4 * n * k,
             "bits_per_weight": 32.0},
            {"format": "fp16", "codes": 2 * n * k, "scales": 0, "zeros": 0, "weight_bytes": 2 * n * k,
             "bits_per_weight": 16.0}]
    for _, r in d.iterrows():
        gs = None if pd.isna(r["group_size"]) else int(r["group_size"])
        spec = QuantSpec(int(r["bits"]), r["scheme"], r["granularity"], gs)
        codes, scales, zeros = (n * k, 4 * n, 0) if r["_w8a8"] else memory_parts(spec, n, k, r["dtype"])
        label = format_label(r["bits"], r["scheme"], r["granularity"], r["group_size"])
        label += " (W8A8, float32 scales)" if r["_w8a8"] else ""
        rows.append({"format": f"{label} ({r['dtype']})" if several_dtypes else label, "codes": codes,
                     "scales": scales, "zeros": zeros, "weight_bytes": int(r["weight_bytes"]),
                     "bits_per_weight": float(r["bits_per_weight"])})
    table = pd.DataFrame(rows)
    table.attrs["shape"] = shape_label(n, k, first["shape_name"])
    return table


def memory_per_precision(table: pd.DataFrame):
    """Horizontal stacked bars: codes, scales and zeros of each format, in MiB, with bits per weight."""
    fig = new_figure(8.0, 1.2 + 0.32 * len(table))
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    left = np.zeros(len(table))
    for part, color in (("codes", "tab:blue"), ("scales", "tab:orange"), ("zeros", "tab:green")):
        values = table[part].to_numpy() / MIB
        ax.barh(y, values, left=left, color=color, label=part, height=0.7)
        left += values
    for yi, total, bpw in zip(y, table["weight_bytes"] / MIB, table["bits_per_weight"], strict=True):
        ax.text(total, yi, f"  {total:.3g} MiB, {bpw:.4g} bits/weight", va="center", fontsize=8)
    ax.set_yticks(y, table["format"])
    ax.set_xlim(0, left.max() * 1.45)  # room for the labels
    ax.set_xlabel("MiB")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right")
    ax.set_title(f"Memory of one {table.attrs['shape']} weight per format (codes + scales + zeros)")
    return fig


def depth_frame(df: pd.DataFrame) -> pd.DataFrame:
    d = df[(df["op"] == "stack") & (df["status"] == "ok") & df["depth"].notna()]
    if d.empty:
        raise NoData("the run has no stack rows (error against depth comes from the `stack` op)")
    return d


def error_vs_depth(df: pd.DataFrame):
    """Output error against depth, absolute (the seed's mean |y - y_ref|) and relative to the
    output's norm, log scale; one line per format of one quantized implementation (a candidate,
    else the reference, else a peer), and the baseline (unquantized weights) as the floor."""
    d = depth_frame(df)
    quantized_impls = impls_by_role(d[d["role"] != "baseline"])
    if not quantized_impls:
        raise NoData("the stack rows are all the baseline's: no quantized implementation to draw")
    impl = quantized_impls[0]
    baselines = impls_by_role(d[d["role"] == "baseline"])
    colors = impl_colors(df)
    groups = list(d.groupby(["N", "K", "M", "dtype"], sort=False))
    fig = new_figure(9.0, 3.4 * len(groups))
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for row, ((n, k, m, dtype), g) in zip(axes, groups, strict=True):
        fmt_keys = ["bits", "scheme", "granularity", "group_size"]
        quantized = g[g["impl"] == impl]
        for key, line in quantized.groupby(fmt_keys, dropna=False, sort=False):
            line = line.sort_values("depth")
            style = dict(color=BITS_COLORS.get(int(key[0])), linestyle=GRANULARITY_STYLES.get(key[2], "-"),
                         marker="o", markersize=4)
            for ax, col in zip(row, ("out_mean_abs_diff", "out_rel_err"), strict=True):
                ax.plot(line["depth"], line[col], label=format_label(*key), **style)
        floors = [(b, g[g["impl"] == b].drop_duplicates("depth").sort_values("depth")) for b in baselines]
        for ax, col in zip(row, ("out_mean_abs_diff", "out_rel_err"), strict=True):
            for baseline, floor in floors:
                if not floor.empty:
                    ax.plot(floor["depth"], floor[col], color=colors[baseline], linestyle="--", marker="s",
                            markersize=3, label=f"{baseline}: {dtype} weights (no quantization)")
            ax.set_yscale("log")
            ax.set_xlabel("depth (layers applied)")
            ax.set_xticks(sorted(g["depth"].unique()))
        row[0].set_ylabel("mean |y - y_float64|")
        row[1].set_ylabel("||y - y_float64|| / ||y_float64||")
        where = f"{shape_label(n, k, m=m)}, {dtype}, {impl}"
        row[0].set_title(f"absolute error ({where})")
        row[1].set_title(f"relative error ({where})")
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4)
    return fig
