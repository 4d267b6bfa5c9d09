"""Nothing lost: a killed sweep resumes without repeating or duplicating cases, and a damaged
results file says which file and line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from quantbench.harness.config import ConfigError, load_config
from quantbench.harness.results import RunFolderError, load_run, read_samples
from quantbench.harness.execution.sweep import run_sweep

CONFIG = """\
name: crash
device: cpu
timing: {cpu_reps: 1}
sweep:
  op: [quantize, dequantize]
  impl: [triton, torch]
  bits: [8, 4, 2]
  scheme: [asymmetric, symmetric]
  granularity: [channel]
  shapes: [{N: 16, K: 256}]
"""
DETERMINISTIC = ["op", "impl", "bits", "scheme", "granularity", "N", "K", "status", "weight_bytes",
                 "mse", "mae", "max_abs_err", "snr_db", "rel_err"]


def cli(*args):
    return [sys.executable, "-m", "quantbench.harness.cli", *args]


def case_lines(run: Path) -> int:
    path = run / "rows.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def start_sweep(cfg_path: Path, out: Path, cases: int) -> tuple[subprocess.Popen, Path | None]:
    """`quantbench run` in a subprocess, returned once `cases` cases are on disk (run None if the
    sweep never got that far in two minutes)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.Popen(cli("run", str(cfg_path), "--out", str(out), "--no-progress"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = list(out.glob("crash-*"))
        if runs and case_lines(runs[0]) >= cases:
            return proc, runs[0]
        time.sleep(0.05)
    return proc, None


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(CONFIG)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc, run = start_sweep(cfg_path, tmp_path / "killed", cases=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run is not None, "the sweep never got going"
    finished = case_lines(run)
    assert 5 <= finished < 24 and not (run / "results.csv").exists()

    resumed = subprocess.run(cli("run", str(cfg_path), "--resume", str(run), "--no-progress"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_sweep(load_config(cfg_path), tmp_path / "whole", show_progress=False).path
    got, meta = load_run(run)
    want, _ = load_run(whole)
    assert len(got) == len(want) == 24 and meta["resumed_utc"]
    pd.testing.assert_frame_equal(got[DETERMINISTIC].reset_index(drop=True), want[DETERMINISTIC].reset_index(drop=True))
    assert not (run / "samples.jsonl").exists()  # compressed when the resumed run finished
    assert len(read_samples(run)) == 24  # one record per row, none duplicated by the resume


def test_resume_refuses_a_changed_config(tmp_path):
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(CONFIG.replace("bits: [8, 4, 2]", "bits: [8]"))
    run = run_sweep(load_config(cfg_path), tmp_path, show_progress=False).path
    cfg_path.write_text(CONFIG.replace("bits: [8, 4, 2]", "bits: [4]"))
    with pytest.raises(ConfigError, match="different config; changed: sweep.bits"):
        run_sweep(load_config(cfg_path), tmp_path, resume=run, show_progress=False)


def test_resume_of_a_finished_run_repeats_nothing(tmp_path):
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(CONFIG.replace("bits: [8, 4, 2]", "bits: [8]"))
    run = run_sweep(load_config(cfg_path), tmp_path, show_progress=False).path
    before = (run / "rows.jsonl").read_text()
    again = run_sweep(load_config(cfg_path), tmp_path, resume=run, show_progress=False)
    assert (run / "rows.jsonl").read_text() == before and len(again.rows) == 8


def test_damaged_rows_file_names_file_and_line(tmp_path):
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(CONFIG.replace("bits: [8, 4, 2]", "bits: [8]"))
    run = run_sweep(load_config(cfg_path), tmp_path, show_progress=False).path
    (run / "results.csv").unlink()
    lines = (run / "rows.jsonl").read_text().splitlines()
    (run / "rows.jsonl").write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
    with pytest.raises(RunFolderError, match=r"rows.jsonl:4: not a valid JSON record .* lines 1-3 are intact"):
        load_run(run)
    (run / "rows.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # torn by a kill
    with pytest.raises(RunFolderError, match=r"rows.jsonl:4: the last line is cut short"):
        load_run(run)
    out = subprocess.run(cli("show", str(run)), capture_output=True, text=True)
    assert out.returncode == 2 and "rows.jsonl:4" in out.stderr and "Traceback" not in out.stderr
    assert json.loads(lines[0])["rows"]  # what was intact is still there to resume from


def test_ctrl_c_stops_after_the_case_and_writes_what_was_measured(tmp_path):
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(CONFIG)
    proc, run = start_sweep(cfg_path, tmp_path / "stopped", cases=3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert run is not None and proc.returncode == 130, stderr
    df, meta = load_run(run)  # results.csv was written
    assert (run / "results.csv").exists() and meta["stopped_early"] is True
    assert 3 <= len(df) < 24 and len(df) == case_lines(run)
    assert "--resume" in stdout


def test_a_resume_cut_short_reads_its_new_cases_too(tmp_path):
    """A finished run resumed is unfinished until it finishes again: a resume killed midway left
    the old finish markers and table in place, and the run read as the old table (its new cases
    left out, the record called damaged)."""
    from quantbench.harness.results import RunWriter, load_run
    from quantbench.harness.results.storage import read_meta

    row = {"op": "quantize", "impl": "torch", "role": "reference", "bits": 8, "scheme": "symmetric",
           "granularity": "channel", "dtype": "float32", "N": 16, "K": 32, "status": "ok"}
    writer = RunWriter.create(tmp_path, "cut", {"config": {"name": "cut"}})
    writer.append_case("a", [row], [()])
    writer.finish(lambda df, meta: "", stopped_early=True)
    resumed = RunWriter.resume(writer.path)
    resumed.append_case("b", [{**row, "N": 64}], [()])  # and then the process dies: no finish()
    meta = read_meta(writer.path)
    assert not {"finished_utc", "rows", "status_counts", "stopped_early"} & set(meta)
    assert not (writer.path / "results.csv").exists()
    df, _ = load_run(writer.path)
    assert sorted(df["N"].tolist()) == [16, 64]
