"""What a kernel engineer looks at: latency against M per implementation, each candidate's speedup
over every other implementation as heatmaps, achieved rates against the run's calibrated ceilings
(a roofline), and GPU against GPU. Which implementation is the subject (a candidate) and in which
order and colour they are drawn comes from the rows' roles, never from their names.

Only rows with valid GPU timings are drawn (interpreter timings say nothing about speed). Each
function returns a Figure or raises NoData naming what the run lacks.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm

from ..analysis.gpu_views import gpu_names
from ..results.schema import DTYPE_CEILING, INT8_CEILING  # a run calibrated before these has only copy_gbps
from ..analysis.labels import format_label, format_order, shape_label
from .figures import NoData, impl_colors, impls_by_role, new_figure, plain_log


def timed(df: pd.DataFrame) -> pd.DataFrame:
    """ok rows with a median time taken on a GPU."""
    valid = df["timing_valid"].map(lambda v: v is True or str(v).lower() == "true")
    return df[(df["status"] == "ok") & df["ms"].notna() & valid]


def labelled(d: pd.DataFrame) -> pd.DataFrame:
    """d with `shape` (with the layer count of a stack), `format` (with the dtype where the op ran
    several) and their sort keys: shapes by size, formats by the dtype most rows use first, then
    bits, scheme, granularity."""
    dtype_rank = {dt: i for i, dt in enumerate(d["dtype"].value_counts().index)}
    fmt = [format_label(*r) for r in d[["bits", "scheme", "granularity", "group_size"]].itertuples(index=False)]
    if len(dtype_rank) > 1:
        fmt = [f"{f} {dt}" for f, dt in zip(fmt, d["dtype"], strict=True)]
    shapes = [shape_label(n, k, s, layers=layers)
              for n, k, s, layers in d[["N", "K", "shape_name", "layers"]].itertuples(index=False)]
    axes = d[["bits", "scheme", "granularity", "group_size", "dtype"]].itertuples(index=False)
    fmt_key = [(dtype_rank[dt], -(b if pd.notna(b) else 0), str(s), format_order(g, gs)) for b, s, g, gs, dt in axes]
    return d.assign(shape=shapes, format=fmt, _shape_key=d["N"].astype(float) * d["K"].astype(float),
                    _fmt_key=fmt_key)


def _ordered(d: pd.DataFrame, col: str, key: str) -> list:
    return list(d.sort_values(key, kind="stable")[col].drop_duplicates())


def _log_ticks_m(ax, ms: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.minorticks_off()


def latency_vs_m(df: pd.DataFrame, op: str):
    """One panel per shape (rows) and format (columns): median ms against M, one line per implementation."""
    colors = impl_colors(df)
    d = timed(df)
    d = d[(d["op"] == op) & d["M"].notna()]
    if d["M"].nunique() < 2:
        raise NoData(f"{op}: latency against M needs timed rows at two or more values of M")
    d = labelled(d)
    shapes, formats = _ordered(d, "shape", "_shape_key"), _ordered(d, "format", "_fmt_key")
    fig = new_figure(max(7.5, 0.6 + 3.0 * len(formats)), 0.7 + 2.5 * len(shapes))  # 7.5: room for the title
    axes = fig.subplots(len(shapes), len(formats), squeeze=False)
    ms = sorted(int(m) for m in d["M"].unique())
    handles = {}
    for i, shape in enumerate(shapes):
        for j, fmt in enumerate(formats):
            ax = axes[i][j]
            cell = d[(d["shape"] == shape) & (d["format"] == fmt)]
            if cell.empty:
                ax.set_visible(False)
                continue
            for impl in impls_by_role(cell):
                line = cell[cell["impl"] == impl].sort_values("M")
                (h,) = ax.plot(line["M"].astype(int), line["ms"], marker="o", markersize=3.5, color=colors[impl],
                               label=impl)
                handles.setdefault(impl, h)
            _log_ticks_m(ax, ms)
            plain_log(ax)
            ax.set_title(f"{shape}\n{fmt}", fontsize=8.5)
            if j == 0:
                ax.set_ylabel("median ms (log)")
            if i == len(shapes) - 1:
                ax.set_xlabel("M (tokens)")
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=len(handles))
    fig.suptitle(f"{op}: median latency against M, per shape and format", fontsize=11)
    return fig


def speedup_table(df: pd.DataFrame, op: str, candidate: str, peer: str) -> pd.DataFrame:
    """Long table of ms(peer) / ms(candidate) per case both ran: > 1 means the candidate is faster."""
    d = labelled(timed(df)[lambda x: x["op"] == op])
    has_m = d["M"].notna().any()
    d = d.assign(column=d["M"].astype(float) if has_m else d["shape"], panel=d["shape"] if has_m else "")
    keys = ["panel", "format", "column"]
    ms = d.pivot_table(index=keys, columns="impl", values="ms", aggfunc="first")
    if candidate not in ms or peer not in ms:
        raise NoData(f"{op}: no timed {peer} rows beside {candidate}'s")
    speed = (ms[peer] / ms[candidate]).dropna().rename("speedup").reset_index()
    if speed.empty:
        raise NoData(f"{op}: {candidate} and {peer} share no timed case")
    order = d.drop_duplicates("format").set_index("format")["_fmt_key"]
    shape_order = d.drop_duplicates("shape").set_index("shape")["_shape_key"]
    speed["_fmt_key"] = speed["format"].map(order)
    speed["_panel_key"] = speed["panel"].map(shape_order) if has_m else 0
    speed["_col_key"] = speed["column"] if has_m else speed["column"].map(shape_order)
    speed.attrs["column_name"] = "M" if has_m else "shape"
    return speed


def speedup_heatmap(speed: pd.DataFrame, op: str, candidate: str, peer: str):
    """Per shape (or one panel, for ops without M): formats x M, cells ms(peer) / ms(candidate)
    (speedup_table), diverging around 1 on a log scale (green: the candidate faster)."""
    panels = _ordered(speed, "panel", "_panel_key")
    columns = _ordered(speed, "column", "_col_key")
    rows = _ordered(speed, "format", "_fmt_key")
    limit = max(2.0, float(np.abs(np.log2(speed["speedup"])).max()))
    norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    # at least 7 inches wide: the title and the colour bar need it even for one panel of one column
    fig = new_figure(max(7.0, 1.2 + len(panels) * (1.6 + 0.62 * len(columns))), 1.6 + 0.42 * len(rows))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    image = None
    for ax, panel in zip(axes, panels, strict=True):
        cells = speed[speed["panel"] == panel].pivot_table(index="format", columns="column", values="speedup",
                                                           aggfunc="first").reindex(index=rows, columns=columns)
        image = ax.imshow(np.log2(cells.to_numpy(dtype=float)), cmap="RdYlGn", norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(cells.to_numpy(dtype=float)):
            if np.isfinite(v):  # white on the dark ends of the scale
                dark = abs(np.log2(v)) > 0.6 * limit
                ax.text(j, i, f"{v:.2g}x", ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
        ax.set_xticks(range(len(columns)), [f"{c:g}" if isinstance(c, float) else c for c in columns],
                      rotation=0 if speed.attrs["column_name"] == "M" else 30, ha="center" if
                      speed.attrs["column_name"] == "M" else "right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("M (tokens)" if speed.attrs["column_name"] == "M" else "shape")
        ax.set_title(panel or op, fontsize=9)
        ax.grid(False)
    step = 1 + int(limit) // 4  # at most about 9 ticks
    ticks = [t for t in range(-int(limit), int(limit) + 1) if t % step == 0]
    bar = fig.colorbar(image, ax=list(axes), shrink=0.9, ticks=ticks)
    bar.ax.set_yticklabels([f"{2 ** t:g}x" if t >= 0 else f"1/{2 ** -t:g}x" for t in ticks])
    bar.set_label(f"ms {peer} / ms {candidate}")
    fig.suptitle(f"{op}: {candidate}'s speedup over {peer}\nms {peer} / ms {candidate}; above 1: {candidate} "
                 "faster; blank: not measured", fontsize=10)
    return fig


def _intensity(d: pd.DataFrame) -> pd.Series:
    """FLOPs per byte: the row's own column, else (for runs that predate it) TFLOP/s over GB/s,
    which is the same ratio since both come from the same time."""
    return d["intensity"].where(d["intensity"].notna(), 1000 * d["tflops"] / d["gbps"])


def _ceilings(op: str, rows: pd.DataFrame, meta: dict) -> list[tuple[str, float | None, float | None, str]]:
    """(label, measured rate, datasheet rate, why the measured line is not the calibration) of
    the compute ceilings an op's rows face, in TFLOP/s (TOP/s for int8); either rate may be None,
    entries with neither are left out. A ceiling is a ceiling: where a row of this run ran faster
    than the calibrated rate of its arithmetic, the line is drawn at that row's rate instead, and
    the reason names the row and the calibrated figure."""
    if op == "matmul_w8a8":
        groups = {INT8_CEILING: rows}
    else:
        groups = {DTYPE_CEILING[d]: rows[rows["dtype"] == d] for d in rows["dtype"].unique() if d in DTYPE_CEILING}
    calibration, sheet = meta.get("calibration") or {}, meta.get("datasheet") or {}
    out = []
    for key, group in groups.items():
        measured, why = calibration.get(key) or None, ""
        fastest = group.loc[group["tflops"].idxmax()] if group["tflops"].notna().any() else None
        if measured and fastest is not None and fastest["tflops"] > measured:
            shape = "x".join(str(int(fastest[c])) for c in ("M", "N", "K") if pd.notna(fastest.get(c)))
            why = f"raised from the calibrated {measured:.0f}: {fastest['impl']} at {shape} ran faster"
            measured = float(fastest["tflops"])
        if measured or sheet.get(key):
            out.append((key.split("_")[0], measured, sheet.get(key) or None, why))
    return out


def _rate_unit(ceiling: str) -> str:
    return "TOP/s" if ceiling == "int8" else "TFLOP/s"


def _legend_below(ax, wrap: int = 48) -> None:
    """The panel's legend under it, three entries a row; an entry longer than `wrap` characters
    (a ceiling raised by a row, with its reason) wrapped onto lines of its own, two entries a row,
    so the legend stays about as wide as the panel (wider, constrained layout gives up on the figure)."""
    handles, labels = ax.get_legend_handles_labels()
    long = any(len(label) > wrap for label in labels)
    labels = [textwrap.fill(label, wrap) for label in labels]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2 if long else 3, fontsize=7)


def roofline(df: pd.DataFrame, meta: dict):
    """Per op with FLOPs: achieved TFLOP/s and GB/s against arithmetic intensity, with the run's
    calibrated copy bandwidth and matmul rates (solid) and the GPU's datasheet figures (dotted)."""
    d = timed(df)
    d = d[d["tflops"].notna() & d["gbps"].notna()]
    if d.empty:
        raise NoData("no timed rows with FLOPs (matmul, stack, matmul_w8a8): nothing to put on a roofline")
    d = d.assign(_intensity=_intensity(d))
    colors = impl_colors(df)
    ops = list(d["op"].unique())
    copy = (meta.get("calibration") or {}).get("copy_gbps")
    hbm = (meta.get("datasheet") or {}).get("hbm_gbps")
    fig = new_figure(11.0, 0.6 + 4.6 * len(ops))
    axes = fig.subplots(len(ops), 2, squeeze=False)
    for (ax_f, ax_b), op in zip(axes, ops, strict=True):
        rows = d[d["op"] == op]
        unit = "TFLOP/s (int8: TOP/s)" if op == "matmul_w8a8" else "TFLOP/s"
        ceilings = _ceilings(op, rows, meta)
        peaks = [p for _, measured, sheet, _ in ceilings for p in (measured, sheet) if p]
        lo, hi = rows["_intensity"].min() / 2, rows["_intensity"].max() * 2
        if peaks and copy:  # show the ridge point
            hi = max(hi, 2 * max(peaks) * 1000 / copy)
        x = np.geomspace(lo, hi, 200)
        for impl in impls_by_role(rows):
            pts = rows[rows["impl"] == impl]
            ax_f.scatter(pts["_intensity"], pts["tflops"], s=14, color=colors[impl], label=impl, alpha=0.8)
            ax_b.scatter(pts["_intensity"], pts["gbps"], s=14, color=colors[impl], label=impl, alpha=0.8)
        measured = [(name, peak, why) for name, peak, _, why in ceilings if peak]
        if copy:
            roof = copy * x / 1000
            for peak in [p for _, p, _ in measured] or [np.inf]:
                ax_f.plot(x, np.minimum(roof, peak), color="black", linewidth=1.2)
            ax_f.plot([], [], color="black", label=f"measured: copy {copy:.0f} GB/s" +
                      "".join(f", {name} {peak:.0f} {_rate_unit(name)}" + (f" ({why})" if why else "")
                              for name, peak, why in measured) +
                      ("" if measured else " (no matmul rate in meta.json)"))
            ax_b.axhline(copy, color="black", linewidth=1.2, label=f"measured copy {copy:.0f} GB/s")
        sheet = [(name, peak) for name, _, peak, _ in ceilings if peak]
        if hbm or sheet:
            sheet_roof = hbm * x / 1000 if hbm else np.full_like(x, np.inf)
            for peak in [p for _, p in sheet] or [np.inf]:
                ax_f.plot(x, np.minimum(sheet_roof, peak), color="0.45", linestyle=":", linewidth=1.2)
            figures = ([f"{hbm:.0f} GB/s"] if hbm else []) + [f"{name} {peak:.0f} {_rate_unit(name)}"
                                                              for name, peak in sheet]
            ax_f.plot([], [], color="0.45", linestyle=":", label="datasheet: " + ", ".join(figures))
        if hbm:
            ax_b.axhline(hbm, color="0.45", linestyle=":", linewidth=1.2, label=f"datasheet {hbm:.0f} GB/s")
        ax_f.set_ylim(rows["tflops"].min() / 2, max([rows["tflops"].max(), *peaks]) * 3)
        ax_b.set_ylim(rows["gbps"].min() / 2, max(v for v in (rows["gbps"].max(), copy, hbm) if v) * 2)
        for ax, what in ((ax_f, unit), (ax_b, "GB/s")):
            ax.set_xscale("log")
            plain_log(ax)
            ax.set_xlim(lo, hi)
            ax.set_xlabel("arithmetic intensity (FLOPs per byte moved, log)")
            ax.set_ylabel(f"achieved {what} (log)")
            _legend_below(ax)
        ax_f.set_title(f"{op}: compute rate under the roofline")
        ax_b.set_title(f"{op}: bandwidth")
    if not copy:
        fig.suptitle("no calibrated ceilings in meta.json (calibration.copy_gbps missing): points only")
    return fig


def bandwidth(df: pd.DataFrame, meta: dict):
    """Ops without FLOPs (quantize, dequantize): achieved GB/s against weight size, per
    implementation, under the run's measured copy bandwidth."""
    d = timed(df)
    d = d[d["tflops"].isna() & d["gbps"].notna() & d["N"].notna()]
    if d.empty:
        raise NoData("no timed rows of an op without FLOPs (quantize, dequantize)")
    copy = (meta.get("calibration") or {}).get("copy_gbps")
    hbm = (meta.get("datasheet") or {}).get("hbm_gbps")
    colors = impl_colors(df)
    ops = list(d["op"].unique())
    fig = new_figure(5.0 * len(ops), 3.8)
    axes = fig.subplots(1, len(ops), squeeze=False, sharey=True)[0]
    for ax, op in zip(axes, ops, strict=True):
        rows = d[d["op"] == op]
        elements = rows["N"].astype(float) * rows["K"].astype(float)
        sizes = sorted(elements.unique())
        for impl in impls_by_role(rows):
            pick = rows["impl"] == impl
            ax.scatter(elements[pick], rows.loc[pick, "gbps"], s=14, color=colors[impl], alpha=0.7, label=impl)
            med = rows[pick].assign(e=elements[pick]).groupby("e")["gbps"].median()
            ax.plot(med.index, med.to_numpy(), color=colors[impl], linewidth=1)
        if copy:
            ax.axhline(copy, color="black", linewidth=1.2, label=f"measured copy {copy:.0f} GB/s")
        if hbm:
            ax.axhline(hbm, color="0.45", linestyle=":", linewidth=1.2, label=f"datasheet {hbm:.0f} GB/s")
        ax.set_xscale("log")
        plain_log(ax)
        ax.set_ylim(rows["gbps"].min() / 2, max(v for v in (rows["gbps"].max(), copy, hbm) if v) * 2)
        ax.set_xticks(sizes, [_elements_label(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("weight elements N x K")
        ax.set_title(f"{op}: every format (points), median (line)")
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("achieved GB/s")
    return fig


def _elements_label(n: float) -> str:
    side = int(round(n ** 0.5))
    return f"{side}²" if side * side == int(n) else f"{n:.3g}"


def _candidates(table: pd.DataFrame, name: str) -> list[str]:
    """The candidates whose times the GPU table has for the GPU `name` (its "{name}: ms {cand}" columns)."""
    prefix = f"{name}: ms "
    return [c[len(prefix):] for c in table.columns if c.startswith(prefix)]


def _share_column(table: pd.DataFrame, name: str, share: str, cand: str) -> str:
    """The column of cand's share ("% of roofline", "% of copy") on the GPU `name`: gpu_views names
    it after the candidate only where that GPU's run has several."""
    return f"{name}: {share}" if len(_candidates(table, name)) == 1 else f"{name}: {share} {cand}"


def gpu_vs_gpu(table: pd.DataFrame, metas: list[dict]):
    """Each GPU against the first, case by case, for every candidate both runs timed: its median ms
    (with the ratio the copy bandwidths predict for a bandwidth-bound kernel) and its share of its
    own GPU's roofline (of its copy bandwidth, for runs that predate the roofline columns). Points
    are labelled by GPU, and by candidate where there are several."""
    if table.empty:
        raise NoData("the runs share no timed case with candidate rows")
    names = gpu_names(metas)
    copies = [(m.get("calibration") or {}).get("copy_gbps") for m in metas]
    base = names[0]
    pairs = [(cand, name) for cand in _candidates(table, base) for name in names[1:]
             if cand in _candidates(table, name)]
    if not pairs:
        raise NoData(f"the other runs timed none of {base}'s candidates ({', '.join(_candidates(table, base))})")
    cands = list(dict.fromkeys(cand for cand, _ in pairs))
    labels = {(cand, name): name if len(cands) == 1 else f"{name}: {cand}" for cand, name in pairs}
    markers = {cand: "os^Dv"[i % 5] for i, cand in enumerate(cands)}
    share = next((s for s in ("% of roofline", "% of copy")
                  if all(table.get(_share_column(table, n, s, cand), pd.Series(dtype=float)).notna().any()
                         for cand, name in pairs for n in (base, name))), None)
    has_pct = share is not None
    fig = new_figure(10.0 if has_pct else 5.2, 4.4)
    axes = fig.subplots(1, 2 if has_pct else 1, squeeze=False)[0]
    x = table[[f"{base}: ms {cand}" for cand in cands]].to_numpy(dtype=float)
    span = np.geomspace(np.nanmin(x) / 1.5, np.nanmax(x) * 1.5, 50)
    ax = axes[0]
    for cand, name in pairs:
        ax.scatter(table[f"{base}: ms {cand}"], table[f"{name}: ms {cand}"], s=14, alpha=0.8, marker=markers[cand],
                   label=labels[cand, name])
    for name, copy in zip(names[1:], copies[1:], strict=True):
        if copy and copies[0]:
            ax.plot(span, span * copies[0] / copy, linestyle=":", linewidth=1,
                    label=f"{name}: x {copies[0] / copy:.2f} (copy bandwidth ratio)")
    ax.plot(span, span, color="black", linewidth=1, label="same time")
    plain_log(ax, "x")
    plain_log(ax, "y")
    who = cands[0] if len(cands) == 1 else "candidate"
    ax.set_xlabel(f"{who} median ms on {base}")
    ax.set_ylabel(f"{who} median ms on the other GPU")
    ax.set_title(f"{cands[0]}'s time, case by case" if len(cands) == 1 else "Each candidate's time, case by case")
    ax.legend(fontsize=7, loc="upper left")
    if has_pct:
        ax = axes[1]
        for cand, name in pairs:
            ax.scatter(table[_share_column(table, base, share, cand)], table[_share_column(table, name, share, cand)],
                       s=14, alpha=0.8, marker=markers[cand], label=labels[cand, name])
        columns = list(dict.fromkeys(_share_column(table, n, share, cand)
                                     for cand, name in pairs for n in (base, name)))
        top = float(np.nanmax(table[columns].to_numpy(dtype=float))) * 1.1
        ax.plot([0, top], [0, top], color="black", linewidth=1, label="same share")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        what = "roofline" if share == "% of roofline" else "measured copy bandwidth"
        ax.set_xlabel(f"% of {base}'s {what}")
        ax.set_ylabel(f"% of the other GPU's {what}")
        ax.set_title(f"Share of each GPU's own {what}")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"GPU against GPU: {len(table)} shared cases", fontsize=10)
    return fig
