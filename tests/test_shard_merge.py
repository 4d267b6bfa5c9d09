"""Shards of a sweep split it deterministically; merged, they are the whole sweep."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from quantbench.harness.analysis.tables import summary_markdown
from quantbench.harness.execution.cases import expand
from quantbench.harness.config import load_config
from quantbench.harness.results.merge import MergeError, merge_runs
from quantbench.harness.results import load_run, read_samples
from quantbench.harness.execution.sweep import run_sweep, shard_of

CONFIG = """\
name: sh
timing: {cpu_reps: 1}
sweep: {op: [quantize, dequantize], bits: [8, 4, 2], scheme: symmetric, granularity: channel, N: [8], K: [64]}
"""
SAME = ["op", "impl", "bits", "status", "weight_bytes", "mse", "snr_db"]


def test_shards_partition_the_sweep_by_workload(tmp_path):
    path = tmp_path / "sh.yaml"
    path.write_text(CONFIG)
    cases = expand(load_config(path))
    shards = [shard_of(cases, i, 3) for i in (1, 2, 3)]
    assert sorted(c.key() for s in shards for c in s) == sorted(c.key() for c in cases)
    for s in shards:  # both implementations of a workload land in one shard
        assert {c.workload for c in s}.isdisjoint({c.workload for o in shards if o is not s for c in o})
    assert shard_of(cases, 2, 3) == shards[1]  # deterministic


def test_merged_shards_equal_the_whole_run(tmp_path):
    path = tmp_path / "sh.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    parts = [run_sweep(cfg, tmp_path / "parts", device="cpu", show_progress=False, shard=(i, 2)).path for i in (1, 2)]
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "merge", *map(str, parts),
                          "--out", str(tmp_path / "merged")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (merged,) = (tmp_path / "merged").iterdir()
    whole = run_sweep(cfg, tmp_path / "whole", device="cpu", show_progress=False).path
    got, meta = load_run(merged)
    want, _ = load_run(whole)
    key = ["op", "impl", "bits"]
    pd.testing.assert_frame_equal(got[SAME].sort_values(key).reset_index(drop=True),
                                  want[SAME].sort_values(key).reset_index(drop=True))
    assert len(meta["merged_from"]) == 2 and len(read_samples(merged)) == len(got)

    with pytest.raises(MergeError, match="is in both"):
        merge_runs([parts[0], parts[0]], tmp_path / "dup", summary_markdown)
    other = tmp_path / "other.yaml"
    other.write_text(CONFIG.replace("N: [8]", "N: [16]"))
    different = run_sweep(load_config(other), tmp_path / "o", device="cpu", show_progress=False, shard=(1, 2)).path
    with pytest.raises(MergeError, match="different config"):
        merge_runs([parts[0], different], tmp_path / "mixed", summary_markdown)


def _unfinished(run):
    """The run as a kill would leave it: its meta.json without finished_utc."""
    meta = json.loads((run / "meta.json").read_text())
    del meta["finished_utc"]
    (run / "meta.json").write_text(json.dumps(meta))


def test_an_unfinished_run_is_read_with_a_warning_and_merges_unfinished(tmp_path, capsys):
    path = tmp_path / "sh.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    parts = [run_sweep(cfg, tmp_path / "parts", device="cpu", show_progress=False, shard=(i, 2)).path for i in (1, 2)]
    capsys.readouterr()
    load_run(parts[0])
    assert "did not finish" not in capsys.readouterr().err  # a finished run reads quietly
    _unfinished(parts[1])
    df, _ = load_run(parts[1])
    err = capsys.readouterr().err
    assert "did not finish" in err and f"--resume {parts[1]}" in err and f"its {len(df)} recorded rows" in err
    merged = merge_runs(parts, tmp_path / "merged", summary_markdown)
    load_run(merged)
    assert "did not finish" in capsys.readouterr().err  # a merge of an unfinished shard is unfinished too


def test_a_merge_cut_short_leaves_no_run_folder_that_looks_whole(tmp_path):
    path = tmp_path / "sh.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    parts = [run_sweep(cfg, tmp_path / "parts", device="cpu", show_progress=False, shard=(i, 2)).path for i in (1, 2)]

    def killed(df, meta):  # the last file of the merge: everything else is written by then
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        merge_runs(parts, tmp_path / "merged", killed)
    left = list((tmp_path / "merged").iterdir())
    assert [p.name.startswith(".") and p.name.endswith(".partial") for p in left] == [True], left


def test_a_merge_missing_a_shard_or_of_a_stopped_shard_is_not_whole(tmp_path, capsys):
    """A merge of shard 1/2 alone, or of a shard stopped early (Ctrl-C), read as a finished sweep:
    finished_utc set, nothing said."""
    path = tmp_path / "sh.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    parts = [run_sweep(cfg, tmp_path / "parts", device="cpu", show_progress=False, shard=(i, 2)).path for i in (1, 2)]
    alone = merge_runs(parts[:1], tmp_path / "alone", summary_markdown)
    meta = json.loads((alone / "meta.json").read_text())
    assert meta["missing_shards"] == ["2/2"] and "finished_utc" not in meta
    capsys.readouterr()
    load_run(alone)
    assert "lacks shard(s) 2/2" in capsys.readouterr().err
    stopped = json.loads((parts[1] / "meta.json").read_text())
    (parts[1] / "meta.json").write_text(json.dumps({**stopped, "stopped_early": True}))
    load_run(parts[1])
    assert "was stopped early" in capsys.readouterr().err  # the shard itself says so too
    both = json.loads((merge_runs(parts, tmp_path / "both", summary_markdown) / "meta.json").read_text())
    assert both["stopped_early"] and "finished_utc" not in both and "missing_shards" not in both
    # the merge of shard 1/2 alone, resumed with its config: shard 2's cases are measured, and
    # its meta.json no longer says it lacks them
    whole = run_sweep(cfg, tmp_path / "alone", device="cpu", show_progress=False, resume=alone).path
    meta = json.loads((whole / "meta.json").read_text())
    assert "finished_utc" in meta and "missing_shards" not in meta
    assert len(load_run(whole)[0]) == len(load_run(parts[0])[0]) + len(load_run(parts[1])[0])
