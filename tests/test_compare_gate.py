"""The regression gate refuses what it cannot judge: a latency that is not a number is `unjudged`
(never an improvement), runs that share no case or hold a case twice are errors (exit 2) and not
a pass, and compare-gpus and show refuse a copied run, an --out that is a file and an empty
--columns before printing anything."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from quantbench.harness.analysis.compare import Thresholds, compare_runs, latency_verdict
from quantbench.harness.analysis.loaded_run import CompareError, LoadedRun, case_key
from quantbench.harness.cli import main
from quantbench.harness.results import RunWriter
from test_bad_input import GOOD
from test_compare import samples

T = Thresholds()
NAN = float("nan")


def matmul_run(root, name, cases, n=50):
    """A run folder on an H200 with one row per (impl, N, median ms) in `cases`, each with n GPU
    samples around its median; a case given twice is written twice."""
    writer = RunWriter.create(root, name, {"config": {"name": name, "seed": 0, "sweep": {"op": ["matmul"]}},
                                           "env": {"gpu": "NVIDIA H200"}})
    for i, (impl, n_cols, median) in enumerate(cases):
        s = median * (1 + 0.01 * np.random.default_rng(i).standard_normal(n))
        row = {"op": "matmul", "impl": impl, "role": "candidate", "bits": 4, "scheme": "asymmetric",
               "granularity": "group", "group_size": 128, "dtype": "float16", "M": 1, "N": n_cols, "K": 4096,
               "status": "ok", "ms": float(np.median(s)), "timing_valid": True, "snr_db": 20.0}
        writer.append_case(f"matmul-{i}", [row], [tuple(s.tolist())])
    writer.finish(lambda df, meta: "")
    return writer.path


@pytest.mark.parametrize("base, cand", [
    ([NAN] * 50, [NAN] * 50),  # every sample NaN: the U test's p and both medians are NaN
    (samples(10, 0.02), [NAN] * 50),
    (samples(10, 0.02), samples(8, 0.02, seed=3)[:-1] + [NAN]),  # one NaN: the median is finite, p is not
    ([0.0] * 50, samples(8, 0.02, seed=3)),  # a median of 0: no ratio
])
def test_a_latency_that_is_not_a_number_is_unjudged(base, cand):
    assert latency_verdict(base, cand, T)[0] == "unjudged"


def test_nan_samples_of_every_case_are_unjudged_and_fail_the_unjudged_gate(tmp_path):
    """Before: every comparison with NaN is False, so 96 cases of NaN samples were `improvement`."""
    base = LoadedRun.of(matmul_run(tmp_path, "base", [("triton", 4096, 0.03), ("mine", 4096, 0.05)]))
    cand = LoadedRun.of(matmul_run(tmp_path, "cand", [("triton", 4096, 0.03), ("mine", 4096, 0.05)]))
    assert set(compare_runs(base, cand)["latency"]) == {"same"}  # the runs are judged as they stand
    cand._samples = {key: [NAN] * len(s) for key, s in cand.samples.items()}
    table = compare_runs(base, cand)
    assert set(table["latency"]) == {"unjudged"} and set(table["verdict"]) == {"unjudged"}


def test_runs_that_share_no_case_are_refused(tmp_path, capsys):
    base = matmul_run(tmp_path, "base", [("triton", 4096, 0.03)])
    cand = matmul_run(tmp_path, "cand", [("triton", 8192, 0.05)])
    with pytest.raises(CompareError, match="share no case"):
        compare_runs(base, cand)
    capsys.readouterr()
    assert main(["compare", str(base), str(cand), "--out", str(tmp_path / "cmp"), "--fail-on", "regression"]) == 2
    err = capsys.readouterr().err
    assert "share no case" in err and base.name in err and cand.name in err and "Traceback" not in err
    assert not (tmp_path / "cmp" / "verdict.json").exists()  # no record that a gate could read as a pass


def test_a_case_has_one_key_whether_read_from_the_table_or_from_the_record(tmp_path):
    """rows.jsonl's table holds Int64 columns (pd.NA for an empty axis): keyed apart from
    results.csv's NaN, a run and its own record shared no case, all `new` and `missing`."""
    record_only = tmp_path / "record-only"
    shutil.copytree(GOOD, record_only)
    (record_only / "results.csv").unlink()
    assert case_key(["matmul", pd.NA, 8]) == case_key(["matmul", NAN, 8.0]) == case_key(["matmul", None, 8])
    verdicts = set(compare_runs(GOOD, record_only)["verdict"])
    assert verdicts and not verdicts & {"new", "missing"}


def test_a_case_missing_from_the_candidate_is_said_and_can_fail_the_gate(tmp_path, capsys):
    base = matmul_run(tmp_path, "base", [("triton", 4096, 0.03), ("triton", 8192, 0.05)])
    cand = matmul_run(tmp_path, "cand", [("triton", 4096, 0.03)])
    capsys.readouterr()
    assert main(["compare", str(base), str(cand), "--out", str(tmp_path / "cmp")]) == 0
    assert "1 case(s) of the baseline are missing from a candidate" in capsys.readouterr().out
    assert json.loads((tmp_path / "cmp" / "verdict.json").read_text())["counts"]["missing"] == 1
    assert main(["compare", str(base), str(cand), "--out", str(tmp_path / "cmp"), "--fail-on", "missing"]) == 1
    assert main(["compare", str(base), str(base), "--out", str(tmp_path / "same"), "--fail-on", "missing"]) == 0


def test_a_run_that_holds_a_case_twice_is_refused(tmp_path, capsys):
    one = LoadedRun.of(matmul_run(tmp_path, "one", [("triton", 4096, 0.03)]))
    twice = LoadedRun(one.path, pd.concat([one.df, one.df], ignore_index=True), one.meta)
    with pytest.raises(CompareError) as e:
        compare_runs(one, twice)
    assert str(one.path) in str(e.value) and "op=matmul impl=triton bits=4" in str(e.value)
    with pytest.raises(CompareError, match="more than once"):
        compare_runs(twice, one, mode="relative")
    run = matmul_run(tmp_path, "dup", [("triton", 4096, 0.03), ("triton", 4096, 0.06)])
    capsys.readouterr()
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert run.name in err and "Traceback" not in err


def test_compare_gpus_refuses_a_copy_of_a_run(tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(GOOD, copy)
    capsys.readouterr()
    assert main(["compare-gpus", str(GOOD), str(copy)]) == 2
    out, err = capsys.readouterr()
    assert "share a run id" in err and str(copy) in err and "Traceback" not in err
    assert out == ""


def test_compare_gpus_refuses_an_out_that_is_a_file_before_any_table(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    capsys.readouterr()
    assert main(["compare-gpus", str(GOOD), "--out", str(afile)]) == 2
    out, err = capsys.readouterr()
    assert "--out" in err and "expected a folder" in err and out == ""
    assert main(["compare-gpus", str(GOOD), "--out", str(tmp_path / "gpus")]) == 0
    assert (tmp_path / "gpus" / "gpus.md").exists()


@pytest.mark.parametrize("columns", [",", "", " , "])
def test_show_refuses_an_empty_column_selection(columns, capsys):
    capsys.readouterr()
    assert main(["show", str(GOOD), "--columns", columns]) == 2
    out, err = capsys.readouterr()
    assert "--columns" in err and out == ""


def test_a_row_whose_samples_are_recorded_twice_is_refused(tmp_path, capsys):
    """Two sample records of one row: which would be its samples? The last one used to win."""
    import gzip
    run = tmp_path / "twice"
    shutil.copytree(GOOD, run)
    path = run / "samples.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    path.write_bytes(gzip.compress("".join(lines + lines[:1]).encode()))
    capsys.readouterr()
    assert main(["compare", str(GOOD), str(run), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "recorded twice" in err and str(run) in err and "Traceback" not in err


def test_verdict_json_is_strict_json(tmp_path):
    """A CI gate reads verdict.json, maybe with jq or JSON.parse, which refuse bare NaN: a value
    that is missing (a regression's depth outside a stack, its layers) is
    null there."""
    base = matmul_run(tmp_path, "base", [("triton", 4096, 0.03)])
    cand = matmul_run(tmp_path, "cand", [("triton", 4096, 0.04)])
    assert main(["compare", str(base), str(cand), "--out", str(tmp_path / "cmp"), "--fail-on", "regression"]) == 1
    text = (tmp_path / "cmp" / "verdict.json").read_text()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    (regression,) = json.loads(text, parse_constant=refuse)["regressions"]
    assert regression["depth"] is None and regression["ratio"] > 1.2, regression
