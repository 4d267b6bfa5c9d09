"""Bad input files found by fuzzing: each is refused with exit status 2 and a line naming the file
and the key (or tensor, or benchmark), never a traceback, never "ok", and never a half-written run.

pytest-benchmark JSON (from-pytest-benchmark), recursive YAML aliases (configs and thresholds), a
safetensors file that is not one or holds an empty matrix, exclude entries that match nothing,
timing bounds the wrong way round, and `configs --copy` onto a file.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from quantbench.harness.cli import main
from quantbench.harness.config import load_config
from quantbench.harness.execution.cases import expand
from test_bad_input import GOOD, TINY
from test_config import ROOT, error_of

STATS = {"median": 0.001, "min": 0.0009, "mean": 0.0011, "stddev": 0.0001, "rounds": 3}
BENCH = {"fullname": "t::k[a]", "stats": STATS,
         "extra_info": {"case": {"op": "matmul", "impl": "triton", "bits": 4, "dtype": "float16",
                                 "M": 1, "N": 64, "K": 64}}}


def _bench(**changes) -> dict:
    """BENCH with `changes`, each key a dotted path (stats.data, extra_info.case.bits)."""
    bench = copy.deepcopy(BENCH)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = bench
        for p in parents:
            node = node[p]
        node[last] = value
    return bench


OTHER = _bench(fullname="t::k[b]", **{"extra_info.case.bits": 8})
# name: (the JSON, what the error must say besides the file)
BAD_JSON = {
    "data-words": ({"benchmarks": [_bench(**{"stats": {"data": ["a", "b"]}})]}, ["benchmarks[0].stats.data[0]", "'a'"]),
    "data-a-number": ({"benchmarks": [_bench(**{"stats": {"data": 5}})]}, ["benchmarks[0].stats.data", "list"]),
    "data-negative": ({"benchmarks": [_bench(**{"stats.data": [0.001, -0.001]})]}, ["stats.data[1]", "> 0"]),
    "fullname-a-list": ({"benchmarks": [_bench(fullname=["x"])]}, ["benchmarks[0].fullname", "['x']"]),
    "bits-a-word": ({"benchmarks": [_bench(**{"extra_info.case.bits": "four"})]},
                    ["benchmarks[0].extra_info.case.bits", "'four'", "whole number"]),
    "rounds-fractional": ({"benchmarks": [_bench(**{"stats.rounds": 1.5})]}, ["stats.rounds", "1.5"]),
    "rounds-beyond-64-bits": ({"benchmarks": [_bench(**{"stats.rounds": 10**30})]}, ["stats.rounds", "whole number"]),
    "stats-nan": ({"benchmarks": [_bench(**{"stats.median": float("nan")})]}, ["stats.median", "nan"]),
    "stats-negative": ({"benchmarks": [_bench(**{"stats.min": -1})]}, ["stats.min", "-1"]),
    "stats-infinite": ({"benchmarks": [_bench(**{"stats.mean": float("inf")})]}, ["stats.mean", "inf"]),
    "case-empty": ({"benchmarks": [_bench(**{"extra_info.case": {}})]}, ["extra_info.case.op", "missing"]),
    "case-typo": ({"benchmarks": [_bench(**{"extra_info.case.bitz": 4})]}, ["case.bitz", "did you mean 'bits'"]),
    "env-gpu-a-list": ({"benchmarks": [BENCH], "machine_info": {"quantbench_env": {"gpu": ["a"]}}},
                       ["machine_info.quantbench_env.gpu", "['a']"]),
    "same-case-twice": ({"benchmarks": [OTHER, BENCH, _bench(fullname="t::k[c]")]},
                        ["benchmarks[2] ('t::k[c]')", "same case as benchmarks[1]"]),
    "row-count-fractional": ({"benchmarks": [_bench(**{"extra_info.row": {"op": "matmul", "impl": "triton",
                                                                            "dtype": "float16", "N": 64, "K": 64,
                                                                            "n_samples": 2.5}})]},
                             ["extra_info.row: column n_samples holds 2.5", "whole number"]),
    "row-timed-but-not-judged": ({"benchmarks": [_bench(**{"extra_info.row": {"op": "matmul", "impl": "triton",
                                                                                "dtype": "float16", "N": 64, "K": 64,
                                                                                "ms": 0.5}})]},
                                 ["extra_info.row: column timing_valid", "true or false"]),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_bad_pytest_benchmark_json_is_refused_before_any_folder(name, tmp_path, capsys):
    content, expected = BAD_JSON[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(content))
    out = tmp_path / "out"
    assert main(["from-pytest-benchmark", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{name}.json: " in err, err
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"
    if "benchmarks[0]." in expected[0] and "fullname" not in expected[0]:
        assert "(in benchmark 't::k[a]')" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_good_pytest_benchmark_json_still_converts(tmp_path, capsys):
    """The entries the bad ones are made from convert (so the refusals above are the damage's)."""
    path = tmp_path / "good.json"
    path.write_text(json.dumps({"benchmarks": [BENCH, OTHER, _bench(fullname="t::k[c]", **{
        "stats.data": [0.001, 0.002], "extra_info.case.bits": 2})]}))
    assert main(["from-pytest-benchmark", str(path), "--out", str(tmp_path / "out")]) == 0
    (run,) = (tmp_path / "out").iterdir()
    assert len((run / "rows.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("text,line,where", [
    ("name: t\nsweep: &a {op: quantize, N: 64, K: 64, extra: *a}\n", 2, "sweep.extra"),
    ("name: t\nsweep:\n  op: &l [quantize, *l]\n", 3, "sweep.op[1]"),
])
def test_a_recursive_alias_is_a_config_error(text, line, where, tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"loop.yaml:{line}: '{where}'" in err and "recursive alias" in err and "Traceback" not in err, err


def test_a_recursive_alias_in_thresholds_and_deep_nesting_are_refused(tmp_path, capsys):
    thresholds = tmp_path / "thr.yaml"
    thresholds.write_text("default: &a {x: *a}\n")
    assert main(["compare", str(GOOD), str(GOOD), "--thresholds", str(thresholds)]) == 2
    err = capsys.readouterr().err
    assert "thr.yaml:1: 'default.x'" in err and "recursive alias" in err, err
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 5000)
    assert main(["validate", str(deep)]) == 2
    assert "deep.yaml: nested too deeply" in capsys.readouterr().err


def test_an_alias_used_twice_is_fine(tmp_path, capsys):
    """An alias outside its own anchor is plain YAML: it still validates (and its node is walked once)."""
    path = tmp_path / "shared.yaml"
    path.write_text("name: t\nsweep: {op: quantize, N: &n 64, K: *n, bits: &b [8], impl: [torch, triton]}\n"
                    "exclude: [{bits: *b, impl: triton}]\n")
    assert main(["validate", str(path)]) == 0
    assert "ok, 1 cases" in capsys.readouterr().out


def _safetensors_config(tmp_path, checkpoint) -> str:
    path = tmp_path / "st.yaml"
    path.write_text(f"name: t\ndevice: cpu\ntiming: {{cpu_reps: 1}}\n"
                    f"weights: {{source: safetensors, path: {checkpoint}}}\n"
                    f"sweep: {{op: quantize, impl: torch, bits: 8}}\n")
    return str(path)


def test_a_file_that_is_not_safetensors_is_a_config_error(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_text("root:x:0:0:root:/root:/bin/bash\n")
    config = _safetensors_config(tmp_path, junk)
    for command in (["validate", config], ["run", config, "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "st.yaml:4: weights.path:" in err and "not a readable safetensors checkpoint" in err, err
        assert "Traceback" not in err


def test_an_empty_matrix_in_a_checkpoint_is_refused_by_name(tmp_path, capsys):
    checkpoint = tmp_path / "z.safetensors"
    save_file({"fine": torch.ones(4, 64), "empty": torch.zeros(0, 64)}, str(checkpoint))
    config = _safetensors_config(tmp_path, checkpoint)
    for command in (["validate", config], ["run", config, "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "tensor 'empty'" in err and "is [0, 64]" in err and "from 1 to 16777216" in err, err
    save_file({"fine": torch.ones(4, 64)}, str(checkpoint))
    assert main(["validate", config]) == 0


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


EXCLUDED = "name: t\nsweep: {op: quantize, N: 64, K: 64, bits: [8, 4]}\nexclude:\n  - {bits: 8}\n"


@pytest.mark.parametrize("entry,expected", [
    ('{bits: "4"}', ["c.yaml:5: exclude[1]: bits: '4' is not a value of the axis bits", "8, 4 or 2"]),
    ("{bits: 3}", ["c.yaml:5: exclude[1]: bits: 3 is not a value"]),
    ("{N: 64.0}", ["c.yaml:5: exclude[1]: N: 64.0 is not a value", "integer"]),
    ("{bits: 2}", ["c.yaml:5: exclude[1]: matches no case: bits 2 is not swept (the sweep's bits: 8, 4)"]),
    ("{op: matmul}", ["c.yaml:5: exclude[1]: matches no case: op 'matmul' is not swept (the sweep's op: 'quantize')"]),
    ("{op: quantize, K: [32, 128]}", ["exclude[1]: matches no case: K [32, 128] is not swept (the sweep's K: 64)"]),
    ("{group_size: 64}", ["exclude[1]: matches no case: group_size 64", "the sweep's group_size: none"]),
    ("{dtype: bfloat16}", ["exclude[1]: matches no case: dtype 'bfloat16'", "the sweep's dtype: 'float16'"]),
])
def test_an_exclude_entry_that_matches_nothing_is_an_error(entry, expected, tmp_path, capsys):
    assert main(["validate", str(_write(tmp_path, EXCLUDED + f"  - {entry}\n"))]) == 2
    msg = capsys.readouterr().err
    assert ": ok," not in msg and "Traceback" not in msg, msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_an_exclude_entry_that_matches_something_still_drops_it(tmp_path):
    cases = expand(load_config(_write(tmp_path, EXCLUDED + "  - {op: quantize, bits: [4, 2], impl: torch}\n")))
    assert {(c.bits, c.impl) for c in cases} == {(4, "triton")}


def test_an_exclude_entry_may_name_null_for_the_cases_an_axis_does_not_apply_to(tmp_path):
    """M: null matches the cases without an M (quantize's); it failed with a TypeError."""
    text = "name: t\nsweep: {op: [quantize, matmul], N: 64, K: 64, bits: [8], M: [1]}\nexclude:\n  - {M: null}\n"
    cases = expand(load_config(_write(tmp_path, text)))
    assert cases and {c.op for c in cases} == {"matmul"}


def test_excludes_are_checked_against_the_config_as_written(tmp_path):
    """Code may narrow a loaded config's sweep (tests/test_runner.py does): its exclude entries,
    checked against the whole sweep when the file was read, stay, and drop what they still match."""
    cfg = load_config(ROOT / "configs" / "quick.yaml")
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"bits": [4], "scheme": ["symmetric"]})})
    cases = expand(cfg)
    assert cases and not any(c.op == "matmul" and c.scheme == "symmetric" for c in cases)


def test_every_shipped_config_still_validates():
    """The exclude rule is over the whole sweep: every shipped config's entries each drop something."""
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path) if path.stem != "thresholds" and "safetensors" not in path.read_text() else None
        if cfg is not None:
            assert expand(cfg), path


def test_timing_bounds_the_wrong_way_round_are_refused(tmp_path):
    msg = error_of(tmp_path, "name: t\nsweep: {op: quantize, N: 64, K: 64}\n"
                             "timing: {engine: adaptive, min_time_ms: 20000, max_time_ms: 100}\n")
    assert "c.yaml:3: timing:" in msg and "min_time_ms (20000)" in msg and "max_time_ms (100)" in msg, msg
    assert load_config(_write(tmp_path, TINY.replace("timing: {cpu_reps: 1}",
                                                     "timing: {min_time_ms: 100, max_time_ms: 100}")))


def test_configs_copy_onto_a_file_names_the_copy_flag(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["configs", "--copy", str(afile)]) == 2
    err = capsys.readouterr().err
    assert f"--copy {afile}: is a file" in err and "--out" not in err, err


def test_configs_copy_refused_for_one_file_writes_none(tmp_path, capsys):
    """It copied every config before the one already there, then refused."""
    (tmp_path / "w8a8.yaml").write_text("mine")
    assert main(["configs", "--copy", str(tmp_path)]) == 2
    assert "w8a8.yaml exists; not overwritten" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["w8a8.yaml"] and (tmp_path / "w8a8.yaml").read_text() == "mine"


def test_a_folder_given_as_pytest_benchmark_json_is_called_a_folder(tmp_path, capsys):
    (tmp_path / "export.json").mkdir()
    assert main(["from-pytest-benchmark", str(tmp_path / "export.json"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "export.json: a folder, expected a pytest-benchmark JSON file" in err and "Traceback" not in err


def test_the_configs_listing_says_thresholds_are_for_compare(capsys):
    assert main(["configs"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "thresholds: `quantbench compare --thresholds`" in out


@pytest.mark.parametrize("argv, expected", [
    (["fit", "--params", "7e9", "--gpu-mem", ""], "--gpu-mem: expected a size such as 8GiB"),
    (["run", "quick", "--scheduler", "bogus", "--out", "OUT"], "--scheduler 'bogus': not a scheduler address"),
    (["run", "quick", "--scheduler", "http://127.0.0.1:8786", "--out", "OUT"], "expected tcp://host:port"),
])
def test_a_malformed_option_value_is_named(argv, expected, tmp_path, capsys):
    pytest.importorskip("distributed")
    argv = [str(tmp_path) if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_an_exception_whose_text_cannot_be_made_is_still_one_line():
    from quantbench.harness.config.errors import first_line

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")
    assert first_line(Unprintable()) == "Unprintable: (its message could not be read)"
