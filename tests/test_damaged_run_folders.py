"""A run folder damaged inside its files, not just cut short: corrupt compressed samples, bytes that
are not text, records and values of the wrong shape. Every reader refuses it with exit status 2 and
one line naming the file (and line, row or key) and what was expected; never a traceback, never a
wrong value read as a good one. Commands run in-process, as in test_bad_input.py."""

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from quantbench.harness.cli import main
from quantbench.harness.results import COLUMNS, SCHEMA_VERSION, RunFolderError, RunWriter, load_run, read_cases
from quantbench.harness.results.storage import read_meta
from test_bad_input import _csv_with

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "results" / "h200" / "nf4-20261204T213301Z"  # a finished GPU run


@pytest.fixture
def run(tmp_path) -> Path:
    """A copy of BASE to damage, brought to this quantbench's schema version where BASE is older
    (merge joins only runs of the version it writes): the columns added since, empty, as the
    readers take them in an older run."""
    copy = Path(shutil.copytree(BASE, tmp_path / "run"))
    if json.loads((copy / "meta.json").read_text())["schema_version"] != SCHEMA_VERSION:
        _meta(copy, schema_version=SCHEMA_VERSION)
        table = pd.read_csv(copy / "results.csv", keep_default_na=False, dtype=str)
        table.reindex(columns=COLUMNS, fill_value="").assign(schema_version=str(SCHEMA_VERSION)).to_csv(
            copy / "results.csv", index=False)
        cases = [json.loads(line) for line in (copy / "rows.jsonl").read_text().splitlines()]
        for case in cases:
            case["rows"] = [{c: row.get(c) for c in COLUMNS} | {"schema_version": SCHEMA_VERSION} for row in case["rows"]]
        (copy / "rows.jsonl").write_text("".join(json.dumps(case) + "\n" for case in cases))
    return copy


def refused(argv: list[str], capsys, *words: str) -> str:
    """Run the CLI; assert it exits 2 with one error line holding every one of `words`."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"{argv[0]}: exit {rc}, stderr: {err}"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, f"{argv[0]}: {word!r} not in: {err}"
    return err


def readers(run: Path, tmp: Path) -> dict[str, list[str]]:
    """Each command that reads a run's samples, on `run`."""
    return {"compare": ["compare", str(BASE), str(run), "--out", str(tmp / "cmp")],
            "merge": ["merge", str(run), "--out", str(tmp / "merged")],
            "to-pytest-benchmark": ["to-pytest-benchmark", str(run), "--out", str(tmp / "pb.json")]}


def refused_by_every_reader(run: Path, tmp: Path, capsys, message: str, show: bool = True) -> None:
    """Each command that reads the run (`show` too, where `show`) refuses it with `message`, and
    merge, which checks its inputs first, makes no folder."""
    for argv in [*([["show", str(run)]] if show else []), *readers(run, tmp).values()]:
        refused(argv, capsys, message)
    assert not any((tmp / "merged").iterdir())


def _samples(run: Path, change) -> None:
    """samples.jsonl.gz with its first record replaced by change(record)."""
    lines = gzip.decompress((run / "samples.jsonl.gz").read_bytes()).decode().splitlines()
    lines[0] = json.dumps(change(json.loads(lines[0])))
    (run / "samples.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def _without(key: str):
    return lambda rec: {k: v for k, v in rec.items() if k != key}


def _meta(run: Path, **changes) -> None:
    meta = json.loads((run / "meta.json").read_text())
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            meta[section][sub] = value
        else:
            meta[key] = value
    (run / "meta.json").write_text(json.dumps(meta))


def _first_case(run: Path, **changes) -> None:
    """rows.jsonl with its first case record (or the first row of it: row=...) changed, and no
    results.csv, so that the record is what is read."""
    lines = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines()]
    lines[0]["rows"][0].update(changes.pop("row", {}))
    lines[0].update(changes)
    (run / "rows.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "results.csv").unlink()


def test_a_corrupt_deflate_stream_in_the_samples_is_named(run, tmp_path, capsys):
    data = bytearray((run / "samples.jsonl.gz").read_bytes())
    for i in range(100, 400):
        data[i] ^= 0x55
    (run / "samples.jsonl.gz").write_bytes(bytes(data))
    for argv in readers(run, tmp_path).values():
        refused(argv, capsys, "samples.jsonl.gz: not a readable gzip file")


def test_bytes_that_are_not_utf8_in_rows_jsonl_name_the_line(run, capsys):
    with open(run / "rows.jsonl", "ab") as f:
        f.write(b"\xff\xfe garbage\n")
    refused(["show", str(run)], capsys, "rows.jsonl:97: not UTF-8 text", "lines 1-96 are intact")


SAMPLE_DAMAGE = {
    "no-samples_ms": (_without("samples_ms"), "samples_ms holds None, expected a non-empty list of times"),
    "a-list": (lambda rec: [rec["case"], rec["samples_ms"]], "a JSON list, expected a sample record"),
    "a-number": (lambda rec: {**rec, "samples_ms": 5}, "samples_ms holds 5, expected a non-empty list"),
    "strings": (lambda rec: {**rec, "samples_ms": ["0.1", "0.2"]}, "samples_ms[0] holds '0.1', expected a finite"),
    "nan": (lambda rec: {**rec, "samples_ms": [0.03, float("nan")]}, "samples_ms[1] holds nan, expected a finite"),
    "no-case": (_without("case"), "case holds None, expected the case key"),
}


@pytest.mark.parametrize("damage", list(SAMPLE_DAMAGE))
def test_a_sample_record_of_the_wrong_shape_is_named_by_file_and_line(damage, run, tmp_path, capsys):
    change, expected = SAMPLE_DAMAGE[damage]
    _samples(run, change)
    refused_by_every_reader(run, tmp_path, capsys, f"{run.name}/samples.jsonl.gz:1: {expected}", show=False)


def test_resume_refuses_a_sample_record_without_its_case_and_changes_nothing(run):
    _samples(run, _without("case"))
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    with pytest.raises(RunFolderError, match=r"samples\.jsonl\.gz:1: case holds None, expected the case key"):
        RunWriter.resume(run)
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before


META_DAMAGE = {
    "env-a-list": ({"env": [1]}, "env holds [1], expected an object"),
    "env-null": ({"env": None}, "env holds None, expected an object"),
    "calibration-a-string": ({"calibration": "x"}, "calibration holds 'x', expected an object"),
    "copy_gbps-a-string": ({"calibration__copy_gbps": "fast"}, "calibration.copy_gbps holds 'fast', expected a number"),
    "workers-not-objects": ({"workers": [1, 2]}, "workers holds [1, 2], expected a list of objects"),
    "run_id-a-list": ({"run_id": [1]}, "run_id holds [1], expected a string"),
    "config-a-string": ({"config": "x"}, "config holds 'x', expected an object with a string name"),
    "config-without-name": ({"config": {"device": "auto"}}, "config holds {'device': 'auto'}, expected an object "
                                                           "with a string name"),
    "rows-a-string": ({"rows": "96"}, "rows holds '96', expected a whole number of rows"),
    "schema_version-negative": ({"schema_version": -1}, "schema_version holds -1, expected a whole number >= 1"),
    # names that become folder and file names (merge, report): a path would write outside --out
    "run_id-a-path": ({"run_id": "../../escaped"}, "run_id holds '../../escaped', expected a string: a name"),
    "config-name-a-path": ({"config__name": "../x"}, "config.name holds '../x', expected a string: a name"),
    "gpu-a-list": ({"env__gpu": ["a", "b"]}, "env.gpu holds ['a', 'b'], expected the GPU's name"),
    "seed-a-word": ({"config__seed": "abc"}, "config.seed holds 'abc', expected a whole number >= 0"),
    # merge lists every shard a run lacks: 10^20 of them hung it
    "shard-a-word": ({"shard": "ab"}, "shard holds 'ab', expected [I, N] with 1 <= I <= N <= 10000"),
    "shard-too-many": ({"shard": [1, 10 ** 20]}, "shard holds [1, 100000000000000000000], expected [I, N]"),
}


@pytest.mark.parametrize("damage", list(META_DAMAGE))
def test_a_meta_json_key_of_the_wrong_type_is_named(damage, run, tmp_path, capsys):
    changes, expected = META_DAMAGE[damage]
    _meta(run, **changes)
    refused_by_every_reader(run, tmp_path, capsys, f"{run.name}/meta.json: {expected}")


def test_every_committed_meta_json_and_rows_jsonl_still_reads():
    runs = [p.parent for p in sorted((ROOT / "results").rglob("meta.json"))
            if "schema_version" in json.loads(p.read_text())]  # a folder without one is no quantbench run
    assert len(runs) > 30
    for path in runs:
        assert read_meta(path, required=True)
        if (path / "rows.jsonl").exists():
            assert read_cases(path / "rows.jsonl")


ROW_DAMAGE = {
    "bits-a-word": ({"row": {"bits": "four"}}, "column bits holds 'four', expected a number"),
    "bits-a-fraction": ({"row": {"bits": 4.5}}, "column bits holds 4.5, expected a whole number"),
    "N-a-list": ({"row": {"N": [1, 2]}}, "column N holds [1, 2], expected a number"),
    "ms-a-word": ({"row": {"ms": "fast"}}, "column ms holds 'fast', expected a number"),
    "rows-a-number": ({"rows": 5}, "rows holds 5, expected a list of rows (objects)"),
    "rows-not-objects": ({"rows": [5]}, "rows holds [5], expected a list of rows (objects)"),
    "timing_valid-empty": ({"row": {"timing_valid": None}}, "column timing_valid is empty, expected true or false"),
    "timing_valid-a-word": ({"row": {"timing_valid": "yes"}},
                            "column timing_valid holds 'yes', expected true or false"),
    # what the readers group by or draw weights from (show, compare, merge, report): a list is no
    # key, an axis value the config cannot give has no weights to draw
    "op-a-list": ({"row": {"op": ["quantize"]}}, "column op holds ['quantize'], expected a text (or null)"),
    "status-an-object": ({"row": {"status": {"a": 1}}}, "column status holds {'a': 1}, expected a text"),
    "scheme-unknown": ({"row": {"scheme": "bogus"}}, "column scheme holds 'bogus', expected one of asymmetric"),
    "bits-3": ({"row": {"bits": 3}}, "column bits holds 3, expected one of 8, 4, 2"),
    "op-unknown": ({"row": {"op": "convolve"}}, "column op holds 'convolve', expected one of quantize"),
    "N-past-the-largest": ({"row": {"N": 2 ** 40}}, "column N holds 1099511627776, expected a dimension from 1"),
    "case-an-object": ({"case": {"k": 1}}, "case holds {'k': 1}, expected the case key (a text)"),
}


@pytest.mark.parametrize("damage", list(ROW_DAMAGE))
def test_a_value_in_rows_jsonl_is_checked_as_results_csv_is(damage, run, tmp_path, capsys):
    changes, expected = ROW_DAMAGE[damage]
    _first_case(run, **changes)
    refused_by_every_reader(run, tmp_path, capsys, f"{run.name}/rows.jsonl:1: {expected}")


@pytest.mark.parametrize("value, expected", [("", "column timing_valid is empty, expected True or False"),
                                             ("yes", "column timing_valid holds 'yes', expected True or False"),
                                             ("1", "column timing_valid holds '1', expected True or False")])
def test_timing_valid_in_results_csv_must_be_true_or_false(value, expected, run, tmp_path, capsys):
    _csv_with(run, "timing_valid", value)
    capsys.readouterr()
    assert main(["show", str(run)]) == 0  # the record, rows.jsonl, is whole: read, and the table's damage said
    err = capsys.readouterr().err
    assert f"results.csv: row 2: {expected}" in err and "reading rows.jsonl" in err, err
    (run / "rows.jsonl").unlink()
    refused(["show", str(run)], capsys, f"{run.name}/results.csv: row 2: {expected}")
    refused(readers(run, tmp_path)["compare"], capsys, f"{run.name}/results.csv: row 2: {expected}")


def test_interpreter_timings_in_results_csv_stay_unjudged(run, tmp_path, capsys):
    lines = (run / "results.csv").read_text().splitlines()
    (run / "results.csv").write_text("\n".join([lines[0]] + [line.replace(",True,", ",False,") for line in lines[1:]])
                                     + "\n")
    (run / "rows.jsonl").unlink()
    df, _ = load_run(run)
    assert len(df) == 96 and not df["timing_valid"].astype(bool).any()
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    assert "CPU interpreter" in capsys.readouterr().out
    assert main(["compare", str(BASE), str(run), "--out", str(tmp_path / "cmp")]) == 0
    assert "unjudged: 96" in capsys.readouterr().out


def test_a_bad_integer_in_results_csv_is_named(run, capsys):
    _csv_with(run, "bits", "4.5")
    (run / "rows.jsonl").unlink()
    refused(["show", str(run)], capsys, f"{run.name}/results.csv: row 2: column bits holds 4.5, expected a whole "
                                        f"number")
