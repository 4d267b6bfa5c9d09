"""quantbench report: the files it writes, that its images are images, that the HTML stands alone,
and that the numbers it prints are the run's own (results.csv)."""

import json
import math
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from quantbench.harness.ops import metrics
from quantbench.harness.reporting.report import ReportError, write_report
from quantbench.harness.results import COLUMNS, RunWriter, load_run
from quantbench.harness.analysis.tables import fmt, with_labels
from quantbench.kernels.spec import QuantSpec

ROOT = Path(__file__).resolve().parents[1]
QUICK_H100 = ROOT / "results/h100/quick-20261124T001945Z"  # quantize and dequantize on an H100
QUICK_H200 = ROOT / "results/h200/quick-20261202T201422Z"  # the same on an H200
MATMUL_H200 = ROOT / "results/h200/matmul-20261123T233436Z"  # matmul: triton, torch, tinygemm, fp16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> None:
    import matplotlib.image
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 200 and image.shape[1] >= 400, f"{path.name}: {image.shape}"
    assert image[..., :3].std() > 0.05, f"{path.name} is blank"


def markdown_tables(text: str) -> list[tuple[str, pd.DataFrame]]:
    """(the paragraph before it, the table as strings) for every Markdown table."""
    out = []
    blocks = text.split("\n\n")
    for i, block in enumerate(blocks):
        lines = block.strip().splitlines()
        if len(lines) >= 2 and lines[0].startswith("|") and lines[1].startswith("|---"):
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            out.append((blocks[i - 1] if i else "", pd.DataFrame(cells[2:], columns=cells[0])))
    return out


def check_self_contained(html: str) -> None:
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.I)
    assert refs and all(r.startswith("data:") or r.startswith("#") for r in refs), refs[:3]
    assert "<link" not in html and "<script" not in html and "url(" not in html


# --- a committed GPU run -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    write_report([QUICK_H100], out)
    return out


def test_writes_every_file_of_a_quantize_run(quick_report):
    expected = {"report.html", "report.md", "weight_distribution.png", "quantization_error.png", "weight_sample.png",
                "memory.png", "speedup_quantize_triton_vs_torch.png", "speedup_dequantize_triton_vs_torch.png",
                "bandwidth.png", "fit_7b.png", "fit_models.png"}
    assert expected <= {p.name for p in quick_report.iterdir()}
    for png in quick_report.glob("*.png"):
        check_png(png)
    md = (quick_report / "report.md").read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md))
    assert linked == {p.name for p in quick_report.glob("*.png")}
    # panels this run has no data for are named, with the reason, not silently dropped; where their
    # section drew something else, in the closing section, not under the drawn panels
    closing = md[md.index("## Panels not drawn"):]
    assert "error against depth: not drawn, the run has no stack rows" in closing
    assert "roofline: not drawn" in closing


def test_html_is_self_contained_and_embeds_every_png(quick_report):
    html = (quick_report / "report.html").read_text()
    check_self_contained(html)
    assert html.count("data:image/png;base64,") == len(list(quick_report.glob("*.png")))


def test_table_numbers_equal_results_csv(quick_report):
    df, _ = load_run(QUICK_H100)
    labelled = with_labels(df)
    tables = markdown_tables((quick_report / "report.md").read_text())
    checked = 0
    for caption, table in tables:
        op = re.match(r"`(\w+)`: median ms", caption)
        if not op:
            continue
        for _, row in table.iterrows():
            for col in [c for c in table.columns if c.startswith("ms ")]:
                impl = col[3:]
                match = labelled[(labelled["op"] == op.group(1)) & (labelled["impl"] == impl) &
                                 (labelled["shape"] == row["shape"]) & (labelled["dtype"] == row["dtype"]) &
                                 (labelled["format"] == row["format"])]
                assert len(match) == 1, (op.group(1), impl, row["shape"], row["format"])
                assert row[col] == fmt(float(match["ms"].iloc[0]))
                checked += 1
    assert checked == (df["status"] == "ok").sum() == 48


def test_weights_drawn_again_are_the_measured_ones(quick_report):
    """The SNR of each format on the regenerated weights, printed beside the run's snr_db, is the
    same number: the weight panels show the weights the GPU quantized."""
    df, _ = load_run(QUICK_H100)
    (table,) = [t for _, t in markdown_tables((quick_report / "report.md").read_text()) if "SNR dB, drawn again" in t]
    assert len(table) == len(df.drop_duplicates(["bits", "scheme", "granularity", "group_size"])) == 12
    for _, row in table.iterrows():
        assert row["SNR dB, drawn again"] == row["SNR dB, results.csv"]
        assert float(row["SNR dB, results.csv"]) in {float(fmt(v)) for v in df["snr_db"].dropna()}


def test_memory_table_is_the_runs_weight_bytes_split_exactly(quick_report):
    df, _ = load_run(QUICK_H100)
    (table,) = [t for c, t in markdown_tables((quick_report / "report.md").read_text()) if "codes bytes" in t]
    quantized = table[~table["format"].isin(["fp32", "fp16"])]
    assert len(quantized) == df.drop_duplicates(["bits", "scheme", "granularity", "group_size"]).shape[0]
    for _, row in quantized.iterrows():
        parts = sum(int(row[c]) for c in ("codes bytes", "scales bytes", "zeros bytes"))
        assert parts == int(row["weight_bytes"])
        assert int(row["weight_bytes"]) in set(df["weight_bytes"].astype(int))


# --- tiny run folders written with the real RunWriter -------------------------------------------

N = K = 64
FORMATS = [(8, "asymmetric", "channel", None), (4, "asymmetric", "group", 32), (4, "symmetric", "group", 32)]


def _row(**values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(status="ok", dtype="float16", N=N, K=K, timing_valid=True, schema_version=1)
    row.update(values)
    return row


def _format_columns(bits, scheme, granularity, group_size) -> dict:
    spec = QuantSpec(bits, scheme, granularity, group_size)
    return dict(bits=bits, scheme=scheme, granularity=granularity, group_size=group_size,
                **metrics.weight_memory(spec, N, K, "float16"))


def tiny_run(root: Path, name: str, gpu: str, speed: float, calibration: dict, timed: bool = True) -> Path:
    """A run folder with quantize, matmul (M 1, 16, 64) and stack rows; times scale with `speed`."""
    meta = {"config": {"name": name, "seed": 0, "weights": {"source": "normal", "mean": 0.0, "std": 1.0}},
            "env": {"device": "cuda" if timed else "cpu", "gpu": gpu, "gpu_memory_bytes": 80 << 30},
            "calibration": calibration}
    writer = RunWriter.create(root, name, meta)
    impls = {"triton": 1.0, "torch": 3.0, "fp16": 0.8}
    for fmt_ in FORMATS:
        cols = _format_columns(*fmt_)
        for impl, factor in impls.items():
            ms = 0.01 * factor * speed
            if impl != "fp16":
                writer.append_case(f"q-{impl}-{fmt_}", [_row(op="quantize", impl=impl, ms=ms, gbps=2 * N * K / ms / 1e6,
                                                             timing_valid=timed, **cols)], [(ms, ms)])
            for m in (1, 16, 64):
                ms_m = ms * (1 + m / 16)
                flops, nbytes = 2 * m * N * K, 2 * m * K + N * K + 2 * m * N
                writer.append_case(f"mm-{impl}-{fmt_}-{m}", [_row(
                    op="matmul", impl=impl, M=m, ms=ms_m, gbps=nbytes / ms_m / 1e6, tflops=flops / ms_m / 1e9,
                    timing_valid=timed, **cols)], [(ms_m, ms_m)])
            stack = [_row(op="stack", impl=impl, M=16, layers=3, depth=d, out_rel_err=0.01 * d * (0.1 if impl == "fp16"
                          else 1), out_mean_abs_diff=0.02 * d, ms=ms * 3 if d == 3 else None,
                          gbps=1000.0 / speed if d == 3 else None, tflops=10.0 / speed if d == 3 else None,
                          timing_valid=timed, **cols) for d in (1, 2, 3)]
            writer.append_case(f"st-{impl}-{fmt_}", stack, [(), (), (ms * 3,)])
    writer.finish(lambda df, meta: "")
    return writer.path


def test_products_stack_and_roofline_from_a_tiny_run(tmp_path):
    run = tiny_run(tmp_path, "tiny", "NVIDIA H100 80GB HBM3", 1.0,
                   {"copy_gbps": 3000.0, "fp16_tflops": 700.0, "int8_tops": None})
    write_report([run])  # into the run folder
    names = {p.name for p in run.iterdir()}
    assert {"latency_matmul.png", "speedup_matmul_triton_vs_torch.png", "speedup_matmul_triton_vs_fp16.png",
            "speedup_stack_triton_vs_torch.png", "roofline.png", "error_vs_depth.png", "report.html"} <= names
    for png in run.glob("*.png"):
        check_png(png)
    md = (run / "report.md").read_text()
    assert "fp16_tflops 700" in md
    # the depth table prints the run's out_rel_err
    (depth,) = [t for c, t in markdown_tables(md) if "rel err triton" in t]
    df, _ = load_run(run)
    stack = df[(df["op"] == "stack") & (df["impl"] == "triton")]
    assert sorted(map(float, depth["rel err triton"])) == sorted(float(fmt(v)) for v in stack["out_rel_err"])


def test_a_run_without_ceilings_or_gpu_timings_still_reports(tmp_path):
    run = tiny_run(tmp_path, "cpu", "cpu", 1.0, {}, timed=False)
    out = write_report([run], tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "speed panels: not drawn, its timings were taken on the CPU interpreter" in md
    assert "CPU interpreter" in md and not list(out.glob("latency_*.png"))
    assert (out / "error_vs_depth.png").exists()  # accuracy does not depend on the timings
    run2 = tiny_run(tmp_path, "nocal", "NVIDIA H100 80GB HBM3", 1.0, {})
    out2 = write_report([run2], tmp_path / "out2")
    check_png(out2 / "roofline.png")  # points without ceilings


def test_several_runs_gpu_against_gpu(tmp_path):
    a = tiny_run(tmp_path / "a", "same", "NVIDIA H100 80GB HBM3", 1.0, {"copy_gbps": 3000.0})
    b = tiny_run(tmp_path / "b", "same-h200", "NVIDIA H200", 0.7, {"copy_gbps": 4200.0})
    out = write_report([a, b], tmp_path / "both")
    names = {p.name for p in out.iterdir()}
    for run in (a, b):
        assert f"{run.name}_latency_matmul.png" in names and f"{run.name}_error_vs_depth.png" in names
    # the same weights, formats and shapes: the weight and memory panels once, the second run pointing at them
    assert f"{a.name}_memory.png" in names and f"{b.name}_memory.png" not in names
    md = (out / "report.md").read_text()
    assert f"as for {a.name} above" in md
    # the comparison leads, after the table of contents, which links every run's sections
    assert md.index("## GPU against GPU") < md.index(f"## {a.name}") < md.index(f"## {b.name}")
    assert "- [GPU against GPU](#gpu-against-gpu)" in md and f"  - [Speed: {b.name}](#speed-{b.name.lower()})" in md
    html = (out / "report.html").read_text()
    assert "<nav><ul>" in html and f'id="speed-{b.name.lower()}"' in html and "position: sticky" in html
    assert "gpu_vs_gpu.png" in names
    check_png(out / "gpu_vs_gpu.png")
    check_self_contained((out / "report.html").read_text())
    (table,) = [t for c, t in markdown_tables((out / "report.md").read_text()) if "NVIDIA H200: ms triton" in t]
    assert len(table) == len(FORMATS) * 5  # quantize, matmul at three M, the stack
    h200, h100 = table["NVIDIA H200: ms triton"], table["NVIDIA H100 80GB HBM3: ms triton"]
    assert all(math.isclose(float(x) / float(y), 0.7, rel_tol=2e-3) for x, y in zip(h200, h100, strict=True))


# --- roles, not names: a candidate under another name, several candidates -----------------------

def renamed(df: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    return df.assign(impl=df["impl"].replace(old, new))


def with_second_candidate(df: pd.DataFrame, name: str, speed: float) -> pd.DataFrame:
    """df with a copy of its candidate's rows as a second candidate `name`, `speed` times as fast."""
    cand = df[df["role"] == "candidate"]
    return pd.concat([df, cand.assign(impl=name, ms=cand["ms"] / speed)], ignore_index=True)


def speed_figures(df: pd.DataFrame, meta: dict) -> dict[str, bytes]:
    """The report's speed panels for a loaded run: {file name: PNG}."""
    from quantbench.harness.reporting.document import Image
    from quantbench.harness.reporting.report import _speed_panels
    return {b.file: b.png for b in _speed_panels(df, meta, "") if isinstance(b, Image)}


def test_a_candidate_not_called_triton_gets_its_heatmaps_and_latency_plot():
    from quantbench.harness.reporting.figures import impl_colors
    from quantbench.harness.reporting.speed_plots import speedup_heatmap, speedup_table
    df, meta = load_run(MATMUL_H200)
    df = renamed(df, "triton", "mine")
    assert set(df.loc[df["role"] == "candidate", "impl"]) == {"mine"}
    with warnings.catch_warnings():
        # this run's roofline legend names two raised ceilings with their reasons: unwrapped, the
        # legend outgrew its panel and matplotlib gave up the layout ("axes sizes collapsed to zero")
        warnings.simplefilter("error")
        figures = speed_figures(df, meta)
    assert set(figures) == {"latency_matmul.png", "speedup_matmul_mine_vs_torch.png", "roofline.png",
                            "speedup_matmul_mine_vs_tinygemm.png", "speedup_matmul_mine_vs_fp16.png"}
    assert all(png[:8] == PNG_SIGNATURE for png in figures.values())
    fig = speedup_heatmap(speedup_table(df, "matmul", "mine", "torch"), "matmul", "mine", "torch")
    assert fig.get_suptitle().startswith("matmul: mine's speedup over torch\nms torch / ms mine; above 1: mine faster")
    # colours follow the roles: the candidate blue, the reference orange, a peer purple, the baseline grey
    assert impl_colors(df) == {"mine": "tab:blue", "torch": "tab:orange", "tinygemm": "tab:purple", "fp16": "0.35"}


def test_each_candidate_gets_heatmaps_against_every_other_implementation(tmp_path):
    from quantbench.harness.reporting.speed_plots import speedup_table
    run = tmp_path / QUICK_H200.name
    shutil.copytree(QUICK_H200, run)
    df, _ = load_run(run)
    df = with_second_candidate(renamed(df, "triton", "mine"), "mine_fast", 2.0)
    df.to_csv(run / "results.csv", index=False)
    (run / "rows.jsonl").unlink()  # else the record (rows.jsonl) would win over the edited table
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "rows": len(df)}))  # and its row count
    write_report([run])
    pngs = {p.name for p in run.glob("*.png")}
    pairs = [("mine", "torch"), ("mine", "mine_fast"), ("mine_fast", "torch"), ("mine_fast", "mine")]
    assert {f"speedup_{op}_{a}_vs_{b}.png" for op in ("quantize", "dequantize") for a, b in pairs} <= pngs
    assert not [name for name in pngs if "triton" in name]
    for png in run.glob("speedup_*.png"):
        check_png(png)
    speed = speedup_table(df, "quantize", "mine_fast", "mine")
    assert len(speed) == 12 and speed["speedup"].to_numpy() == pytest.approx(2.0, rel=1e-12)
    tables = [t for c, t in markdown_tables((run / "report.md").read_text()) if c.startswith("`quantize`")]
    assert {"ms mine", "ms mine_fast", "mine vs torch", "mine_fast vs mine"} <= set(tables[0].columns)


def test_gpu_against_gpu_draws_each_candidate():
    from quantbench.harness.analysis.gpu_views import gpu_views
    from quantbench.harness.analysis.loaded_run import LoadedRun
    from quantbench.harness.reporting.speed_plots import gpu_vs_gpu
    runs = []
    for path in (QUICK_H200, QUICK_H100):
        df, meta = load_run(path)
        runs.append(LoadedRun(path, with_second_candidate(renamed(df, "triton", "mine"), "mine_fast", 2.0), meta))
    table, _ = gpu_views(runs)
    fig = gpu_vs_gpu(table, [r.meta for r in runs])
    for ax in fig.axes[:2]:
        legend = {t.get_text() for t in ax.get_legend().get_texts()}
        assert {"NVIDIA H100 80GB HBM3: mine", "NVIDIA H100 80GB HBM3: mine_fast"} <= legend
    single = [LoadedRun(r.path, renamed(load_run(r.path)[0], "triton", "mine"), r.meta) for r in runs]
    fig = gpu_vs_gpu(gpu_views(single)[0], [r.meta for r in single])
    assert fig.axes[0].get_xlabel() == "mine median ms on NVIDIA H200"
    assert "NVIDIA H100 80GB HBM3" in {t.get_text() for t in fig.axes[0].get_legend().get_texts()}


def test_bad_requests(tmp_path):
    with pytest.raises(ReportError, match="--out"):
        write_report([QUICK_H100, ROOT / "results/h100/default-20261124T002009Z"])
    with pytest.raises(ReportError, match="twice"):
        write_report([QUICK_H100, QUICK_H100], tmp_path)
    with pytest.raises(FileNotFoundError):
        write_report([tmp_path / "nope"], tmp_path)


def test_cli(tmp_path, capsys):
    from quantbench.harness.cli import main
    run = tmp_path / QUICK_H100.name
    shutil.copytree(QUICK_H100, run)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists() and "written" in capsys.readouterr().out
    bad = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "report", str(run), str(QUICK_H100)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--out" in bad.stderr and "Traceback" not in bad.stderr


def test_other_commands_do_not_import_matplotlib():
    code = "import sys, quantbench.harness.cli as c; c.build_parser(); print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_weights_that_are_not_the_runs_are_called_out():
    """Another seed gives other weights: the report must say that its weight panels do not show
    the measured weights, not claim a match."""
    from quantbench.harness.reporting.report import _weight_panels
    df, meta = load_run(QUICK_H100)
    meta = {**meta, "config": {**meta["config"], "seed": meta["config"]["seed"] + 1}}
    text = " ".join(b.text for b in _weight_panels(df, meta, "") if hasattr(b, "text"))
    assert "does NOT match" in text


def test_weights_from_a_checkpoint_that_is_not_here(tmp_path):
    from quantbench.harness.reporting.figures import NoData
    from quantbench.harness.reporting.weight_draws import sample_weights
    df, meta = load_run(QUICK_H100)
    missing = {"source": "safetensors", "path": str(tmp_path / "model.safetensors"), "tensors": "*"}
    with pytest.raises(NoData, match="no such safetensors file"):
        sample_weights(df, {**meta, "config": {**meta["config"], "weights": missing}})
    with pytest.raises(NoData, match="no config"):
        sample_weights(df, {})


def test_the_memory_fit_bars_are_on_a_linear_axis():
    """Bar heights are the bytes: int2's bar is about 1/14 of fp32's, as its bytes are (a log axis
    drew it at a third)."""
    from quantbench.harness.reporting.fit_plots import fit_gpus
    fig = fit_gpus([("RTX 4090", 24.0, False), ("H200", 141.0, True)], params=7e9)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    heights = sorted({round(bar.get_height(), 6) for bar in ax.patches if bar.get_height() > 0})
    assert 12 < heights[-1] / heights[0] < 16  # fp32 over int2 with its per-group scales and zeros


def test_the_roofline_line_is_raised_to_a_row_above_the_calibration_and_says_why(tmp_path):
    """The tiny run's fastest fp16 product (matmul rows only) reaches some TFLOP/s; calibrated at a fifth of that,
    the measured line is drawn at the row's rate, and its legend names the row and the calibrated
    figure. Calibrated above every row, the legend gives the calibration alone (a long entry comes
    wrapped onto several lines)."""
    from quantbench.harness.reporting.speed_plots import roofline
    run = tiny_run(tmp_path, "tiny", "NVIDIA H100 80GB HBM3", 1.0, {"copy_gbps": 3000.0})
    df, meta = load_run(run)
    df = df[df["op"] == "matmul"]
    fastest = df.loc[df["tflops"].idxmax()]
    for calibrated, raised in ((fastest["tflops"] / 5, True), (fastest["tflops"] * 5, False)):
        fig = roofline(df, {**meta, "calibration": {"copy_gbps": 3000.0, "fp16_tflops": calibrated}})
        labels = [t.get_text().replace("\n", " ") for ax in fig.axes if ax.get_legend()
                  for t in ax.get_legend().get_texts()]
        measured = [t for t in labels if t.startswith("measured: copy")]
        want = (f"fp16 {fastest['tflops']:.0f} TFLOP/s (raised from the calibrated {calibrated:.0f}: "
                f"{fastest['impl']} at {int(fastest['M'])}x{N}x{K} ran faster)") if raised else \
            f"fp16 {calibrated:.0f} TFLOP/s"
        assert any(want in t for t in measured), measured
        assert raised == any("raised from" in t for t in measured)
