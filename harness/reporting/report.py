"""`quantbench report RUN [RUN ...]`: report.html (self-contained), report.md and the PNGs it links.

For each run: the seed notebook's panels (weights original against dequantized, their error,
memory per format, error against depth), the kernel engineer's (latency against M, each
candidate's speedup over every other implementation, roofline or bandwidth), and the run's tables;
then which models fit which GPUs. Given several runs, GPU against GPU comes first, and a run
whose weights, formats and shapes an earlier one has gets no second copy of its weight and memory
panels. A table of contents follows the title. Which implementation is the subject (a candidate)
and which the dense baseline comes from the rows' roles. A panel whose data a run lacks is not
drawn and the report says why: in place where nothing else in that section was drawn, else in a
closing "Panels not drawn" section. File names are fixed
(prefixed with the run id when the report covers several runs), so a report written again
replaces the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from ..analysis.memory_planner import GIB
from .document import Block, Heading, Image, Skipped, Table, Text, gather_notices, to_html_doc, to_markdown_doc
from ..config.errors import first_line
from ..results import load_run
from ..results.storage import writable_folder
from ..analysis.tables import depth_table, failures, impls_in_role, op_table


SNR_MATCH_DB = 0.01  # float rounding of W_hat on another device moves the SNR by far less


class ReportError(Exception):
    """Runs that cannot make one report (the message says why)."""


def _add_figure(blocks: list[Block], file: str, caption: str, panel: str, make: Callable) -> None:
    """Draw a panel and append it, or append why it was not drawn (NoData only: a bug still raises)."""
    from .figures import NoData, png_bytes
    try:
        fig = make()
    except NoData as e:
        blocks.append(Skipped(panel, str(e)))
        return
    blocks.append(Image(file, caption, png_bytes(fig)))


def _header(df: pd.DataFrame, meta: dict, path: Path) -> list[Block]:
    env = meta.get("env", {})
    calibration = meta.get("calibration") or {}
    lines = [f"`{path}`: GPU {env.get('gpu')}, torch {env.get('torch')}, triton {env.get('triton')}, commit "
             f"{str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}; {len(df)} rows ("
             + ", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items()) + ")."]
    rates = [f"{k} {v:.4g}" for k, v in calibration.items() if isinstance(v, (int, float)) and k != "matmul_size"]
    lines.append("Measured ceilings (meta.json `calibration`): " + (", ".join(rates) if rates else "none") + ".")
    if len(df) and not df["timing_valid"].map(lambda v: v is True or str(v).lower() == "true").all():
        lines.append("Some timings were taken on Triton's CPU interpreter (`timing_valid` False): they say "
                     "nothing about kernel speed and are left out of the speed panels.")
    return [Text(line) for line in lines]


def _weight_panels(df: pd.DataFrame, meta: dict, prefix: str) -> list[Block]:
    from .figures import NoData
    from .accuracy_plots import error_histograms, weight_distribution, weight_row
    from .weight_draws import sample_weights
    try:
        sample = sample_weights(df, meta)
    except NoData as e:
        return [Skipped("weight distribution, quantization error and weight sample", str(e))]
    checked = [abs(f.snr_db - f.run_snr_db) <= SNR_MATCH_DB for f in sample.formats if f.run_snr_db is not None]
    if not checked:
        verdict = "The run has no `snr_db` to check them against."
    elif all(checked):
        verdict = (f"The SNR of each format, recomputed on the whole matrix, matches the run's (within "
                   f"{SNR_MATCH_DB} dB):")
    else:
        verdict = ("The SNR recomputed on the whole matrix does NOT match the run's for every format: these panels "
                   "may not show the weights the run measured (a changed weight generator?).")
    blocks: list[Block] = [Text(
        f"The run's weights are not stored; its smallest matrix ({sample.shape}, {sample.dtype}, layer 0) was drawn "
        "again on the CPU from meta.json's config and seed and quantized with the PyTorch reference, whose codes "
        "equal the Triton kernel's. " + verdict)]
    blocks.append(Table(pd.DataFrame({"format": [f.label for f in sample.formats],
                                      "SNR dB, drawn again": [f.snr_db for f in sample.formats],
                                      "SNR dB, results.csv": [f.run_snr_db for f in sample.formats]})))
    _add_figure(blocks, f"{prefix}weight_distribution.png", "Weight distribution: original against dequantized, "
                "per scheme and bit width (log density, so the clipped or rounded tails show).",
                "weight distribution", lambda: weight_distribution(sample))
    _add_figure(blocks, f"{prefix}quantization_error.png", "Quantization error W_hat - W per format, with its SNR.",
                "quantization error", lambda: error_histograms(sample))
    _add_figure(blocks, f"{prefix}weight_sample.png", "The first weights of row 0, original against dequantized "
                "(one format per bit width: asymmetric, the group size nearest 128 the run has).",
                "weight sample", lambda: weight_row(sample))
    return blocks


def _memory_and_depth(df: pd.DataFrame, prefix: str, memory: bool = True) -> list[Block]:
    from .figures import NoData
    from .accuracy_plots import error_vs_depth, memory_per_precision, memory_table
    blocks: list[Block] = []
    table = None
    try:
        table = memory_table(df) if memory else None
    except NoData as e:
        blocks.append(Skipped("memory per format", str(e)))
    if table is not None:
        _add_figure(blocks, f"{prefix}memory.png", "Persistent memory of one weight per format: packed codes, "
                    "scales and zeros (the run's `weight_bytes`, split by kernels/spec.py's accounting).",
                    "memory per format", lambda: memory_per_precision(table))
        blocks.append(Table(table.rename(columns={"codes": "codes bytes", "scales": "scales bytes",
                                                  "zeros": "zeros bytes"}),
                            f"Bytes of one {table.attrs['shape']} weight (`weight_bytes`, `bits_per_weight` from "
                            "results.csv; fp32 and fp16 are the dense sizes)."))
    _add_figure(blocks, f"{prefix}error_vs_depth.png", "Error of the layer stack's output against depth, against "
                "the float64 output with the original weights: absolute (the seed's mean |difference|) and "
                "relative to the output's norm. The line with square markers is the baseline implementation's: the "
                "error of unquantized weights.",
                "error against depth", lambda: error_vs_depth(df))
    depth = depth_table(df)
    if not depth.empty:
        blocks.append(Table(depth, "Relative output error (`out_rel_err`) by depth and implementation."))
    return blocks


def _speed_panels(df: pd.DataFrame, meta: dict, prefix: str) -> list[Block]:
    from .figures import NoData, impls_by_role
    from .speed_plots import bandwidth, latency_vs_m, roofline, speedup_heatmap, speedup_table, timed
    d = timed(df)
    if d.empty:
        why = ("its timings were taken on the CPU interpreter" if len(df[df["status"] == "ok"])
               else "the run has no ok rows")
        return [Skipped("speed panels", why)]
    blocks: list[Block] = []
    for op in d["op"].unique():
        rows = d[d["op"] == op]
        if rows["M"].notna().any():
            _add_figure(blocks, f"{prefix}latency_{op}.png", f"{op}: median latency against M, per shape and "
                        "format, one line per implementation (log-log).", f"{op} latency against M",
                        lambda op=op: latency_vs_m(df, op))
        candidates = impls_in_role(rows, "candidate")
        if not candidates:
            blocks.append(Skipped(f"{op} speedup heatmaps", "no timed rows of an implementation in the candidate "
                                  "role"))
        for cand in candidates:
            for peer in [i for i in impls_by_role(rows) if i != cand]:
                panel = f"{op}: {cand}'s speedup over {peer}"
                try:
                    speed = speedup_table(df, op, cand, peer)
                except NoData as e:
                    blocks.append(Skipped(panel, str(e)))
                    continue
                _add_figure(blocks, f"{prefix}speedup_{op}_{cand}_vs_{peer}.png", f"{op}: ms {peer} / ms {cand} "
                            f"(above 1: {cand} faster).", panel,
                            lambda speed=speed, op=op, cand=cand, peer=peer: speedup_heatmap(speed, op, cand, peer))
    _add_figure(blocks, f"{prefix}roofline.png", "Roofline: achieved TFLOP/s and GB/s against arithmetic intensity; "
                "solid lines are this GPU's measured ceilings (meta.json `calibration`), dotted its datasheet's.",
                "roofline", lambda: roofline(df, meta))
    _add_figure(blocks, f"{prefix}bandwidth.png", "Ops without FLOPs: achieved GB/s against weight size, under the "
                "measured device-to-device copy bandwidth.", "bandwidth", lambda: bandwidth(df, meta))
    return blocks


def _tables(df: pd.DataFrame, meta: dict) -> list[Block]:
    copy_gbps = (meta.get("calibration") or {}).get("copy_gbps")
    blocks: list[Block] = []
    for op in df["op"].unique():
        table = op_table(df, op, copy_gbps)
        if not table.empty:
            candidates = impls_in_role(df[(df["op"] == op) & (df["status"] == "ok")], "candidate")
            speedups = (f", the speedup of each candidate ({', '.join(candidates)}) over every other implementation "
                        "and its rates" if candidates else "")
            blocks.append(Table(table, f"`{op}`: median ms per implementation (results.csv `ms`){speedups}, and "
                                "the error of the quantized weight."))
    bad = failures(df)
    if not bad.empty:
        blocks.append(Table(bad, "Rows that are not ok, with their reason."))
    return blocks


def weights_key(df: pd.DataFrame, meta: dict) -> str:
    """What the weight and memory panels depend on: the config's weights and seed, the shapes and
    the formats. Two runs with the same key draw the same panels (on any GPU)."""
    import json
    config = meta.get("config") or {}
    formats = sorted({tuple(map(str, r)) for r in df[["bits", "scheme", "granularity", "group_size"]].itertuples(
        index=False)})
    shapes = sorted({tuple(map(str, r)) for r in df[["N", "K", "shape_name"]].itertuples(index=False)})
    return json.dumps([config.get("weights"), config.get("seed"), formats, shapes], default=str)


def run_section(path: Path, df: pd.DataFrame, meta: dict, prefix: str, same_weights_as: str | None = None) -> list[Block]:
    """One run's sections. `same_weights_as`: the run id of an earlier run of this report whose
    weights, formats and shapes are this run's (weights_key): its weight and memory panels are
    not drawn twice, only named."""
    if same_weights_as:
        weights: list[Block] = [Text(f"Weights, their quantization error and memory per format: as for "
                                     f"{same_weights_as} above (the same weights, seed, shapes and formats).")]
        weights += _memory_and_depth(df, prefix, memory=False)
    else:
        weights = [*_weight_panels(df, meta, prefix), *_memory_and_depth(df, prefix)]
    run_id = str(meta.get("run_id", path.name))
    return [Heading(run_id, 2), *_header(df, meta, path),
            Heading(f"Weights, error and memory: {run_id}", 3), *weights,
            Heading(f"Speed: {run_id}", 3), *_speed_panels(df, meta, prefix),
            Heading(f"Tables: {run_id}", 3), *_tables(df, meta)]


def _run_gpus(metas: list[dict]) -> list[tuple[str, float | None]]:
    out = []
    for meta in metas:
        env = meta.get("env", {})
        if str(env.get("device", "")).startswith("cuda") and env.get("gpu"):
            nbytes = env.get("gpu_memory_bytes")
            out.append((env["gpu"], nbytes / GIB if nbytes else None))
    return out


def fit_section(metas: list[dict]) -> list[Block]:
    from ..analysis.memory_planner import precisions
    from .fit_plots import HEADROOM, fit_gpus, fit_matrix, gpus_for
    gpus = gpus_for(_run_gpus(metas))
    blocks: list[Block] = [Heading("Which models fit which GPUs", 2), Text(
        f"Weights only, from `quantbench fit`'s byte accounting (int formats: codes plus one fp16 scale and zero "
        f"per group of 128); {HEADROOM:.0%} of each GPU is kept for activations, KV cache and the runtime. "
        "GPUs marked * are the ones this report's runs measured.")]
    _add_figure(blocks, "fit_7b.png", "The seed notebook's question: a 7B model per precision against each GPU, the "
                "GPU's usable memory drawn over its own bars.", "fit", lambda: fit_gpus(gpus))
    _add_figure(blocks, "fit_models.png", "Most precise format that fits, by model size and GPU.", "fit table",
                lambda: fit_matrix(gpus))
    precs = precisions()
    blocks.append(Table(pd.DataFrame({"precision": [p.name for p in precs],
                                      "bytes/param": [p.bytes_per_param for p in precs],
                                      "7B weights GiB": [7e9 * p.bytes_per_param / GIB for p in precs]}),
                        "A 7B model's weights per precision (the bars above)."))
    return blocks


def gpu_section(runs: list[Path], metas: list[dict]) -> list[Block]:
    from ..analysis.gpu_views import CompareError, gpu_table
    from .speed_plots import gpu_vs_gpu
    blocks: list[Block] = [Heading("GPU against GPU", 2)]
    try:
        table = gpu_table(runs)
    except CompareError as e:  # a run without candidate rows
        return [*blocks, Skipped("GPU against GPU", str(e))]
    _add_figure(blocks, "gpu_vs_gpu.png", "Each GPU against the first, case by case (`quantbench compare-gpus`).",
                "GPU against GPU", lambda: gpu_vs_gpu(table, metas))
    if not table.empty:
        blocks.append(Table(table, "The shared cases (`quantbench compare-gpus`): each candidate's ms, its speedup "
                            "over every other implementation, and its share of that GPU's roofline and measured "
                            "copy bandwidth."))
    return blocks


def write_report(runs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write report.html, report.md and the PNGs for `runs` into `out` (default: the run folder,
    for one run); returns the folder."""
    import matplotlib

    from .figures import STYLE
    paths = [Path(r) for r in runs]
    if not paths:
        raise ReportError("give at least one run folder")
    try:
        resolved = {p.resolve() for p in paths}
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise ReportError(f"{first_line(e).split(': ', 1)[-1]}: expected a run folder") from None
    if len(resolved) != len(paths):
        raise ReportError("a run folder is given twice")
    if out is None and len(paths) > 1:
        raise ReportError("a report of several runs needs --out DIR (it belongs to none of them)")
    loaded = [load_run(p) for p in paths]
    writable_folder(out if out is not None else paths[0])  # refused before the figures are drawn, not after
    metas = [meta for _, meta in loaded]
    run_ids = [str(m.get("run_id", p.name)) for m, p in zip(metas, paths, strict=True)]
    if len(set(run_ids)) != len(run_ids):
        raise ReportError(f"two runs share a run id ({', '.join(run_ids)}): their files would collide")
    out_dir = Path(out) if out is not None else paths[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks: list[Block] = [Heading("quantbench report", 1)]
    with matplotlib.rc_context(STYLE):
        if len(paths) > 1:  # several runs: the comparison first, then each run
            blocks += gpu_section(paths, metas)
        drawn: dict[str, str] = {}  # weights_key -> the run whose weight panels are drawn
        for path, (df, meta), run_id in zip(paths, loaded, run_ids, strict=True):
            key = weights_key(df, meta)
            blocks += run_section(path, df, meta, f"{run_id}_" if len(paths) > 1 else "", drawn.get(key))
            drawn.setdefault(key, run_id)
        blocks += fit_section(metas)
    blocks = gather_notices(blocks)
    for b in blocks:
        if isinstance(b, Image):
            (out_dir / b.file).write_bytes(b.png)
    (out_dir / "report.md").write_text(to_markdown_doc(blocks))
    (out_dir / "report.html").write_text(to_html_doc(blocks, "quantbench report: " + ", ".join(run_ids)))
    return out_dir
