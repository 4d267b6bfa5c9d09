"""Which models fit which GPUs, from `quantbench fit`'s byte accounting (fit.py): the seed notebook's
last panel with each GPU's limit drawn over that GPU's own bars (the seed placed the lines by a
wrong axes fraction), and a models x GPUs table of the most precise format that fits."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from ..analysis.memory_planner import GIB, GPUS, fit, precisions
from .figures import new_figure

HEADROOM = 0.2  # quantbench fit's default: kept for activations, KV cache and the runtime
SEED_GPUS = ("GTX 1080", "RTX 3080", "RTX 4090", "A100 40GB", "H100", "H200")  # the seed's four, and ours
MODEL_SIZES = (1e9, 3e9, 7e9, 13e9, 34e9, 70e9, 405e9)
PRECISION_COLORS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple")


def gpus_for(run_gpus: list[tuple[str, float | None]]) -> list[tuple[str, float, bool]]:
    """(name, GiB, measured here) for the chart: the seed's GPUs and ours, the runs' GPUs marked,
    and a run's GPU that the table lacks added with the memory its run recorded."""
    out = [(name, GPUS[name], False) for name in SEED_GPUS]
    for gpu, gib in run_gpus:
        known = [i for i, (name, _, _) in enumerate(out) if name.lower() in gpu.lower().replace("nvidia ", "")]
        if known:
            name, mem, _ = out[known[0]]
            out[known[0]] = (name, mem, True)
        elif gib:
            out.append((gpu.replace("NVIDIA ", ""), gib, True))
    return sorted(out, key=lambda g: g[1])


def _budget(gib: float) -> float:
    return gib * (1 - HEADROOM)


def _fmt_params(params: float) -> str:
    return f"{params / 1e9:g}B"


def fit_gpus(gpus: list[tuple[str, float, bool]], params: float = 7e9, group_size: int = 128):
    """Bars of one model's weights per precision over each GPU, and that GPU's usable memory
    (after HEADROOM) as a line over its own bars. Formats that do not fit are hatched."""
    precs = precisions(group_size)
    fig = new_figure(10.0, 4.6)
    ax = fig.subplots()
    width = 0.8 / len(precs)
    x = np.arange(len(gpus))
    handles = []
    for j, (p, color) in enumerate(zip(precs, PRECISION_COLORS, strict=True)):
        gib = params * p.bytes_per_param / GIB
        for i, (_, mem, _) in enumerate(gpus):
            fits = gib <= _budget(mem)
            ax.bar(x[i] + (j - (len(precs) - 1) / 2) * width, gib, width, color=color if fits else "white",
                   edgecolor=color, hatch=None if fits else "///", linewidth=1)
        handles.append(Patch(color=color, label=f"{p.name}: {gib:.1f} GiB"))
    handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="///", label="does not fit"))
    # a linear axis: bar heights are the bytes (on a log axis int2 looked like a third of fp32, not 1/14)
    top = max(max(_budget(m) for _, m, _ in gpus), max(params * p.bytes_per_param / GIB for p in precs))
    for i, (_, mem, _) in enumerate(gpus):
        ax.hlines(_budget(mem), x[i] - 0.45, x[i] + 0.45, color="black", linestyle="--", linewidth=1.6)
        ax.text(x[i], _budget(mem) + 0.01 * top, f"{_budget(mem):.1f} GiB usable", ha="center", va="bottom",
                fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})
    ax.set_xticks(x, [f"{name}{' *' if here else ''}\n{mem:.0f} GiB" for name, mem, here in gpus])
    ax.set_ylabel("weights, GiB")
    ax.grid(axis="x", visible=False)
    ax.set_ylim(0, top * 1.45)  # room for the legend
    ax.legend(handles=handles, loc="upper left", ncols=3, fontsize=7.5,
              title="weights per precision (codes + fp16 scales and zeros)", title_fontsize=7.5)
    ax.set_title(f"A {_fmt_params(params)}-parameter model against each GPU's memory less {HEADROOM:.0%} headroom "
                 "(dashed line over the GPU's own bars)" +
                 ("\n* the GPU this report's runs measured" if any(here for *_, here in gpus) else ""))
    return fig


def fit_matrix(gpus: list[tuple[str, float, bool]], models=MODEL_SIZES, group_size: int = 128):
    """Models x GPUs: the most precise format whose weights fit with HEADROOM kept, and its size."""
    precs = precisions(group_size)
    names = [p.name for p in precs]
    grid = np.full((len(models), len(gpus)), len(precs))  # len(precs): nothing fits
    text = [["" for _ in gpus] for _ in models]
    for i, params in enumerate(models):
        for j, (_, mem, _) in enumerate(gpus):
            _, best = fit(params, mem, HEADROOM, group_size)
            if best is None:
                text[i][j] = "none fits"
            else:
                grid[i, j] = names.index(best.precision.name)
                text[i][j] = f"{best.precision.name}\n{best.weights_gib:.1f} GiB"
    fig = new_figure(1.6 + 1.35 * len(gpus), 1.0 + 0.55 * len(models))
    ax = fig.subplots()
    cmap = ListedColormap([*PRECISION_COLORS, "0.85"])
    ax.imshow(grid, cmap=cmap, norm=BoundaryNorm(np.arange(len(precs) + 2) - 0.5, cmap.N), aspect="auto", alpha=0.55)
    for i in range(len(models)):
        for j in range(len(gpus)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7.5)
    ax.set_xticks(range(len(gpus)), [f"{name}{' *' if here else ''}\n{mem:.0f} GiB" for name, mem, here in gpus])
    ax.set_yticks(range(len(models)), [_fmt_params(p) for p in models])
    ax.set_ylabel("parameters")
    ax.grid(False)
    ax.set_title(f"Most precise format that fits, {HEADROOM:.0%} of the GPU kept for activations and KV cache")
    return fig
