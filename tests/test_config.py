"""Config validation: a broken config fails before anything runs, naming the key and the line."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quantbench.harness.execution.cases import expand
from quantbench.harness.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
sweep:
  op: [quantize]
  bits: [8, 4]
  granularity: [channel, group]
  group_size: [32]
  N: [4]
  K: [64]
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as e:
        cfg = load_config(write(tmp_path, text))
        expand(cfg)
    return str(e.value)


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("bits: [8, 4]", "bitz: [8, 4]"), ["c.yaml:4", "unknown key 'sweep.bitz'", "did you mean 'bits'"]),
    (GOOD.replace("bits: [8, 4]", "bits: [8, 3]"), ["c.yaml:4", "sweep.bits[1]", "8, 4 or 2", "got 3"]),
    (GOOD.replace("bits: [8, 4]", "bits: eight"), ["sweep.bits[0]", "got 'eight'"]),
    (GOOD.replace("group_size: [32]", "group_size: [48]"), ["sweep.group_size[0]", "32, 64, 128 or 256"]),
    (GOOD.replace("K: [64]", "K: [96]").replace("[32]", "[64]"), ["sweep.group_size", "64 does not divide K = 96"]),
    (GOOD.replace("granularity: [channel, group]", "granularity: [channel]"), ["'group_size' is set", "no 'group'"]),
    (GOOD.replace("  group_size: [32]\n", ""), ["granularity 'group' needs 'group_size'"]),
    (GOOD.replace("  N: [4]\n", ""), ["weight shape is missing"]),
    (GOOD.replace("N: [4]", "N: [0]"), ["sweep.N[0]", "greater than 0"]),
    (GOOD.replace("name: t", "name: a b"), ["name", "should match pattern"]),
    (GOOD + "device: tpu\n", ["device", "should match pattern"]),
    (GOOD + "timing: {rep_ms: fast}\n", ["timing.rep_ms", "valid integer"]),
    (GOOD + "exclude: [{bit: 8}]\n", ["exclude", "unknown axis 'bit'", "did you mean 'bits'"]),
    (GOOD + "exclude: [{bits: [8, 4]}]\n", ["every grid point is excluded"]),
    (GOOD.replace("op: [quantize]", "op: [matmul9]"),
     ["sweep.op[0]", "Input should be 'quantize', 'dequantize'", "got 'matmul9'"]),
    (GOOD.replace("op: [quantize]", "op: []"), ["sweep.op", "at least 1 item"]),
    ("name: t\n", ["missing required key 'sweep'"]),
    ("", ["expected a mapping", "empty file"]),
    ("name: t\nsweep: [unclosed\n", ["YAML syntax error", "c.yaml:3"]),
])
def test_broken_config_names_key_and_expectation(tmp_path, text, expected):
    msg = error_of(tmp_path, text)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_scalars_are_one_element_axes_and_defaults_fill_in(tmp_path):
    cfg = load_config(write(tmp_path, "name: t\nsweep: {op: dequantize, bits: 2, N: 4, K: 64}\n"))
    assert cfg.sweep.bits == [2] and cfg.dtype == "float16" and cfg.timing.flush_l2 is True


def test_axes_that_do_not_apply_collapse(tmp_path):
    """M and layers do not apply to quantize: five M values give the same cases as one."""
    cfg = load_config(write(tmp_path, GOOD.replace("  N: [4]", "  M: [1, 2, 3, 4, 5]\n  layers: [1, 5]\n  N: [4]")))
    cases = expand(cfg)
    # 2 bits x (channel + group 32) x 2 impls
    assert len(cases) == 8
    assert all(c.M is None and c.layers is None for c in cases)
    assert {c.group_size for c in cases if c.granularity == "channel"} == {None}


def test_named_shapes_and_exclude(tmp_path):
    text = """\
    name: t
    sweep:
      op: [quantize, dequantize]
      impl: [triton]
      bits: [8, 4, 2]
      granularity: [channel]
      shapes: [{name: q_proj, N: 8, K: 64}, {name: down, N: 16, K: 128}]
    exclude:
      - {bits: 2, op: dequantize}
      - {shape_name: down, bits: [8, 4]}
    """
    with pytest.raises(ConfigError, match="unknown axis 'shape_name'"):
        load_config(write(tmp_path, text))
    cases = expand(load_config(write(tmp_path, text.replace("shape_name: down", "N: 16"))))
    kept = {(c.op, c.bits, c.shape_name) for c in cases}
    assert ("dequantize", 2, "q_proj") not in kept and ("quantize", 2, "q_proj") in kept
    assert {(b, s) for _, b, s in kept if s == "down"} == {(2, "down")}


def test_cli_validate_exits_2_without_traceback(tmp_path):
    bad = write(tmp_path, GOOD.replace("bits: [8, 4]", "bitz: [8, 4]"))
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "validate", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown key 'sweep.bitz'" in out.stderr and "Traceback" not in out.stderr + out.stdout
    good = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "validate", str(write(tmp_path, GOOD))],
                          capture_output=True, text=True)
    assert good.returncode == 0 and "8 cases" in good.stdout


def test_shipped_configs_run_by_name_from_any_folder(tmp_path):
    """An installed quantbench finds its example configs by name outside the source tree:
    `validate quick` in an empty folder, `configs` lists them, `--copy` copies them without
    overwriting, and an unknown name says which names there are (exit 2)."""
    cli = [sys.executable, "-m", "quantbench.harness.cli"]
    out = subprocess.run([*cli, "validate", "quick"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "ok, 51 cases" in out.stdout, out.stderr
    listed = subprocess.run([*cli, "configs"], cwd=tmp_path, capture_output=True, text=True)
    assert listed.returncode == 0 and "quick" in listed.stdout and "peers" in listed.stdout
    assert subprocess.run([*cli, "configs", "--copy", "mine"], cwd=tmp_path, capture_output=True).returncode == 0
    assert (tmp_path / "mine" / "quick.yaml").read_text() == (ROOT / "configs" / "quick.yaml").read_text()
    again = subprocess.run([*cli, "configs", "--copy", "mine"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "not overwritten" in again.stderr
    unknown = subprocess.run([*cli, "validate", "quik"], cwd=tmp_path, capture_output=True, text=True)
    assert unknown.returncode == 2 and "no shipped config of that name" in unknown.stderr and "quick" in unknown.stderr


def test_version():
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("quantbench ") and any(c.isdigit() for c in out.stdout)
