"""Bad input never ends in a traceback and is never reported as fine (issue 15).

A corpus of damaged run folders goes through every command that reads runs, and a corpus of bad
configs and arguments through the commands that take them. Each case must end with exit status
2 and a message naming the file (or flag), or, where the run can still be read from its record
(rows.jsonl), exit 0 with a warning that says so. Commands run in-process: an exception that
escapes main() fails the test with its traceback. Hypothesis then throws random YAML and random
bytes at the readers: only the documented errors may come out.
"""

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantbench.harness.cli import main
from quantbench.harness.config import ConfigError, parse_config, read_yaml
from quantbench.harness.results import SCHEMA_VERSION, RunFolderError, load_run

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "results" / "h200" / "quick-20261202T201422Z"


def _csv_with(run: Path, column: str, value: str) -> None:
    lines = (run / "results.csv").read_text().splitlines()
    header = lines[0].split(",")
    first = lines[1].split(",")
    first[header.index(column)] = value
    (run / "results.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")


def _meta_without(key: str):
    def damage(run: Path) -> None:
        meta = json.loads((run / "meta.json").read_text())
        del meta[key]
        (run / "meta.json").write_text(json.dumps(meta))
    return damage


def _drop_column(run: Path, column: str) -> None:
    lines = (run / "results.csv").read_text().splitlines()
    at = lines[0].split(",").index(column)
    (run / "results.csv").write_text("\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != at)
                                               for line in lines) + "\n")


def _keep_cases(run: Path, n: int) -> None:
    lines = (run / "rows.jsonl").read_text().splitlines(keepends=True)
    (run / "rows.jsonl").write_text("".join(lines[:n]))


READ_SAMPLES = frozenset({"compare", "merge", "to-pytest-benchmark"})
# name: (damage, which commands read the run anyway: True every one, False none, or every one
# but those named)
DAMAGES = {
    "meta-not-json": (lambda r: (r / "meta.json").write_text("{not json"), False),
    "meta-a-list": (lambda r: (r / "meta.json").write_text("[1, 2]"), False),
    "meta-binary": (lambda r: (r / "meta.json").write_bytes(b"\xff\xfe\x00garbage"), False),
    "meta-future-schema": (lambda r: (r / "meta.json").write_text(json.dumps(
        {**json.loads((r / "meta.json").read_text()), "schema_version": 99})), False),
    "csv-empty": (lambda r: (r / "results.csv").write_text(""), True),
    "csv-binary": (lambda r: (r / "results.csv").write_bytes(bytes(range(256)) * 4), True),
    "csv-truncated": (lambda r: (r / "results.csv").write_text((r / "results.csv").read_text()[:2000]), True),
    "csv-ms-not-a-number": (lambda r: _csv_with(r, "ms", "fast"), True),
    "csv-and-rows-gone": (lambda r: [(r / f).unlink() for f in ("results.csv", "rows.jsonl")], False),
    "rows-torn-no-csv": (lambda r: ((r / "results.csv").unlink(),
                                    (r / "rows.jsonl").write_text((r / "rows.jsonl").read_text()[:-50])), False),
    "rows-bad-line-no-csv": (lambda r: ((r / "results.csv").unlink(),
                                        (r / "rows.jsonl").write_text("{}\nnot json\n")), False),
    "samples-gz-truncated": (lambda r: (r / "samples.jsonl.gz").write_bytes(
        (r / "samples.jsonl.gz").read_bytes()[:100]), READ_SAMPLES),
    "meta-empty-object": (lambda r: (r / "meta.json").write_text("{}"), False),
    "meta-no-config": (_meta_without("config"), frozenset({"merge"})),
    "meta-unfinished": (_meta_without("finished_utc"), True),
    "csv-column-dropped": (lambda r: _drop_column(r, "ms"), True),
    "rows-emptied-no-csv": (lambda r: ((r / "results.csv").unlink(), (r / "rows.jsonl").write_text("")), False),
    "rows-cut-csv-whole": (lambda r: _keep_cases(r, 2), frozenset({"merge"})),
    "a-file-not-a-folder": (lambda r: (shutil.rmtree(r), r.write_text("x")), False),
    "no-such-folder": (lambda r: shutil.rmtree(r), False),
}

COMMANDS = {
    "show": lambda run, tmp: ["show", str(run)],
    "compare": lambda run, tmp: ["compare", str(GOOD), str(run), "--out", str(tmp / "cmp")],
    "merge": lambda run, tmp: ["merge", str(run), "--out", str(tmp / "merged")],
    "to-pytest-benchmark": lambda run, tmp: ["to-pytest-benchmark", str(run), "--out", str(tmp / "pb.json")],
    "report": lambda run, tmp: ["report", str(run), "--out", str(tmp / "report")],
}


def _current(run: Path) -> Path:
    """GOOD, copied and brought to this schema version (meta.json saying so, results.csv with
    every column), so that every reader, merge too, takes it whole."""
    shutil.copytree(GOOD, run)
    df, meta = load_run(run)
    (run / "meta.json").write_text(json.dumps({**meta, "schema_version": SCHEMA_VERSION}))
    (run / "results.csv").write_text(df.to_csv(index=False))
    return run


@pytest.fixture
def damaged(tmp_path, request):
    name = request.param
    run = _current(tmp_path / f"damaged-{name}")
    DAMAGES[name][0](run)
    return name, run


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damaged", list(DAMAGES), indirect=True)
def test_every_reader_names_the_damage_or_reads_the_record(damaged, command, tmp_path, capsys):
    name, run = damaged
    reads = DAMAGES[name][1]
    readable = reads if isinstance(reads, bool) else command not in reads
    if command == "report" and readable:
        pytest.skip("a readable run's report draws every figure: test_report.py covers that")
    capsys.readouterr()
    rc = main(COMMANDS[command](run, tmp_path))
    err = capsys.readouterr().err
    if readable:
        assert rc == 0, f"{name} / {command}: exit {rc}, stderr: {err}"
        said = {"csv-": "reading rows.jsonl", "meta-unfinished": "did not finish",
                "rows-cut": "the record is damaged"}  # said, not silent
        for prefix, words in said.items():
            if name.startswith(prefix) and command != "merge":
                assert words in err, err
        return
    assert rc == 2, f"{name} / {command}: exit {rc}, stderr: {err}"
    assert "Traceback" not in err
    assert run.name in err or "--out" in err, err  # the message names what is damaged


def test_report_of_a_damaged_run_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(GOOD, run)
    (run / "meta.json").write_text("{")
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "meta.json" in err and len(err.strip().splitlines()) == 1


def test_a_missing_samples_file_is_unjudged_never_same(tmp_path, capsys):
    run = tmp_path / "no-samples"
    shutil.copytree(GOOD, run)
    (run / "samples.jsonl.gz").unlink()
    assert main(["compare", str(GOOD), str(run), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "same: 0" in out and "unjudged: 48" in out and "latency not judged for 48" in out
    assert main(["compare", str(GOOD), str(run), "--out", str(tmp_path / "c2"), "--fail-on", "unjudged"]) == 1
    verdict = json.loads((tmp_path / "c2" / "verdict.json").read_text())
    assert verdict["counts"]["unjudged"] == 48


def test_a_stale_table_is_rebuilt_from_the_record(tmp_path, capsys):
    run = tmp_path / "stale"
    shutil.copytree(GOOD, run)
    (run / "results.csv").write_text((run / "results.csv").read_text().splitlines(keepends=True)[0])
    df, _ = load_run(run)
    assert len(df) == 48 and "reading rows.jsonl" in capsys.readouterr().err


def _another_runs_table(run: Path) -> None:
    shutil.copy(ROOT / "results" / "h200" / "formats-20261204T213013Z" / "results.csv", run / "results.csv")
    rows = pd.read_csv(run / "results.csv").head(48)  # as many rows as the record, of another run
    rows.to_csv(run / "results.csv", index=False)


def _a_row_cut_short(run: Path) -> None:
    lines = (run / "results.csv").read_text().splitlines()
    lines[1] = ",".join(lines[1].split(",")[:10])  # pandas reads the missing cells as empty
    (run / "results.csv").write_text("\n".join(lines) + "\n")


def _a_row_too_long(run: Path) -> None:
    lines = (run / "results.csv").read_text().splitlines()
    lines[1] += ",extra,fields"  # pandas makes the extra cells an index
    (run / "results.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage", [_another_runs_table, _a_row_cut_short, _a_row_too_long], ids=lambda f: f.__name__)
def test_a_table_that_holds_other_rows_than_the_record_is_not_read(damage, tmp_path, capsys):
    """A results.csv of as many rows as rows.jsonl, but other ones (another run's table, a row cut
    short or too long) was read as the run's: the record is read instead, with a warning."""
    run = tmp_path / "other"
    shutil.copytree(GOOD, run)
    want, _ = load_run(GOOD)
    damage(run)
    df, _ = load_run(run)
    assert "reading rows.jsonl" in capsys.readouterr().err
    assert df["ms"].tolist() == want["ms"].tolist() and df["run_id"].tolist() == want["run_id"].tolist()


BAD_CONFIGS = {
    "not-utf8.yaml": b"name: x\n\xff\xfe\n",
    "duplicate-key.yaml": b"name: a\nname: b\nsweep: {op: [quantize]}\n",
    "nan-mean.yaml": b"name: a\nweights: {source: normal, mean: .nan}\nsweep: {op: [quantize], N: [4], K: [64]}\n",
    "inf-std.yaml": b"name: a\nweights: {source: normal, std: .inf}\nsweep: {op: [quantize], N: [4], K: [64]}\n",
    "empty.yaml": b"",
    "a-list.yaml": b"- 1\n- 2\n",
    "binary.yaml": bytes(range(256)),
    "bad-syntax.yaml": b"name: [unclosed\n",
    "unknown-key.yaml": b"name: a\nsweep: {op: [quantize], bitz: [4]}\n",
    "group-not-dividing-k.yaml": b"name: a\nsweep: {op: [quantize], N: [4], K: [96], granularity: [group], "
                                 b"group_size: [64]}\n",
    "unknown-impl.yaml": b"name: a\nsweep: {op: [quantize], impl: [tritonn]}\n",
    "missing-plugin.yaml": b"name: a\nplugins: [no_such_module_here]\nsweep: {op: [quantize]}\n",
    # byte counts of 2^70 would not fit the table's 64-bit columns (the run used to die at its end)
    "huge-shape.yaml": b"name: a\nsweep: {op: [quantize], N: [34359738368], K: [34359738368]}\n",
    "non-square-stack.yaml": b"name: a\nsweep: {op: [stack], N: [64], K: [128], M: [1], layers: [2]}\n",
    # setitimer takes no more than ~1e9 s: every case failed with an OverflowError, the run exit 0
    "endless-case-timeout.yaml": b"name: a\ntiming: {case_timeout_s: .inf}\nsweep: {op: [quantize], N: [4], K: [64]}\n",
    "huge-case-timeout.yaml": b"name: a\ntiming: {case_timeout_s: 1e12}\nsweep: {op: [quantize], N: [4], K: [64]}\n",
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_a_bad_config_is_one_error_naming_the_file(name, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(BAD_CONFIGS[name])
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert name in err and "Traceback" not in err, err


@pytest.mark.parametrize("args", [
    ["validate", "no-such-config.yaml"],
    ["validate", "."],
    ["fit", "--params=-7e9", "--gpu-mem", "8GiB"],
    ["fit", "--params", "nan", "--gpu-mem", "8GiB"],
    ["fit", "--params", "0", "--gpu-mem", "8GiB"],
    ["fit", "--params", "7e9", "--gpu-mem", "0GiB"],
    ["compare-gpus", str(GOOD), str(GOOD)],
    ["from-pytest-benchmark", "."],
    # merge lists every shard a run lacks: a run of 10^20 shards hung it
    ["run", str(ROOT / "configs" / "quick.yaml"), "--shard", "1/99999999999999999999", "--out", "."],
    ["run", str(ROOT / "configs" / "quick.yaml"), "--shard", "\u0661/\u0662", "--out", "."],
    ["run", str(ROOT / "configs" / "quick.yaml"), "--device", "", "--out", "."],  # was read as no --device
    ["run", str(ROOT / "configs" / "quick.yaml"), "--device", "gpu0", "--out", "."],
])
def test_bad_arguments_are_refused(args, capsys):
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_report_of_a_symlink_loop_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "expected a run folder" in err, err


@pytest.mark.parametrize("content", [b"", b"{\"bench", b"[]", b"{\"benchmarks\": [1]}",
                                     b"{\"benchmarks\": [{\"fullname\": \"x\", \"stats\": {}}]}",
                                     b"{\"benchmarks\": [{\"fullname\": \"x\", \"stats\": {}, \"extra_info\": [1]}]}"])
def test_foreign_pytest_benchmark_json_writes_no_run(content, tmp_path, capsys):
    path = tmp_path / "pb.json"
    path.write_bytes(content)
    assert main(["from-pytest-benchmark", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "pb.json" in capsys.readouterr().err
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_out_must_be_a_writable_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["merge", str(GOOD), "--out", str(afile)],
                 ["compare", str(GOOD), str(GOOD), "--out", str(afile)],
                 ["to-pytest-benchmark", str(GOOD), "--out", str(tmp_path)],
                 ["run", str(ROOT / "configs" / "quick.yaml"), "--out", str(afile), "--device", "cpu"]):
        assert main(args) == 2
        assert "--out" in capsys.readouterr().err


def test_resume_refuses_another_machine_or_schema(tmp_path, capsys):
    run = tmp_path / "gpu-run"
    shutil.copytree(GOOD, run)
    meta = json.loads((run / "meta.json").read_text())
    config = tmp_path / "its-config.yaml"  # the config that run was made with (quick.yaml has grown since)
    config.write_text(json.dumps(meta["config"]))
    assert main(["run", str(config), "--resume", str(run), "--device", "cpu"]) == 2
    assert "--resume" in capsys.readouterr().err
    (run / "meta.json").write_text(json.dumps({**meta, "schema_version": SCHEMA_VERSION}))
    assert main(["run", str(config), "--resume", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "GPU 'NVIDIA H200'" in err and "cpu" in err


TINY = """\
name: tiny
device: cpu
timing: {cpu_reps: 1}
sweep: {op: [quantize], impl: [triton], N: [8], K: [64], bits: [8], granularity: [channel], scheme: [symmetric]}
"""


def test_resuming_a_finished_run_says_so(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    (run,) = (tmp_path / "out").iterdir()
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--resume", str(run)]) == 0
    assert "already measured" in capsys.readouterr().err
    assert len(list((tmp_path / "out").iterdir())) == 1  # no second folder


def test_a_plugin_that_fails_on_import_is_a_config_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "exploding_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "with-plugin.yaml"
    config.write_text(TINY.replace("name: tiny\n", "name: tiny\nplugins: [exploding_plugin]\n"))
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "exploding_plugin" in err and "boom at import" in err and "Traceback" not in err


def test_two_runs_in_one_second_get_two_folders(tmp_path):
    from quantbench.harness.results.storage import new_run_folder
    a, b = new_run_folder(tmp_path, "same"), new_run_folder(tmp_path, "same")
    assert a != b and a.is_dir() and b.is_dir()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_random_yaml_gives_a_config_or_a_config_error(text, tmp_path):
    path = tmp_path / "random.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        data, root = read_yaml(path)
        parse_config(data, str(path), root)
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=st.binary(max_size=200), table=st.binary(max_size=400), torn=st.booleans())
def test_random_run_files_give_a_table_or_a_run_folder_error(meta, table, torn, tmp_path):
    run = tmp_path / "random-run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "meta.json").write_bytes(meta)
    (run / "results.csv").write_bytes(table)
    if torn:
        (run / "rows.jsonl").write_bytes(gzip.compress(table)[:50])
    try:
        load_run(run)
    except (RunFolderError, FileNotFoundError):
        pass


def test_the_conversions_without_pytest_benchmark_say_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    import quantbench.harness.results as results
    monkeypatch.setitem(sys.modules, "pytest_benchmark", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "quantbench.harness.results.pytest_benchmark", raising=False)
    monkeypatch.delattr(results, "pytest_benchmark", raising=False)
    for argv in (["to-pytest-benchmark", str(GOOD), "--out", str(tmp_path / "pb.json")],
                 ["from-pytest-benchmark", str(tmp_path / "pb.json"), "--out", str(tmp_path / "runs")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "pip install pytest-benchmark" in err and "Traceback" not in err, err
