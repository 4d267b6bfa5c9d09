"""Implementations from outside the project, through the plugin API (harness/registry), as a user
meets it: the example package examples/plugin (quantbench_example) loaded through a config's
`plugins:` and through an installed entry point; its rows verified (or, for the deliberately wrong
one, recorded as errors) and, for its own int8 weight format, measured on that format's own
weights and bytes; and every way a plugin can be broken, each a PluginError naming the plugin
(from the command line: exit status 2, the message on one line, no traceback)."""

import importlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from quantbench import kernels
from quantbench.harness import cli
from quantbench.harness.ops import metrics
from quantbench.harness.execution.cases import expand
from quantbench.harness.config import ConfigError, parse_config
from quantbench.harness.ops.inputs import activations, make_weights
from quantbench.harness.registry import ENTRY_POINT_GROUP, PluginError, load_registry
from quantbench.harness.results import load_run
from quantbench.harness.execution.sweep import run_sweep
from quantbench.kernels.spec import QuantSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
EXAMPLE_IMPLS = {"example_dequant_mm": "candidate", "example_int8_rowwise": "peer", "example_wrong": "candidate"}
M, N, K = 2, 16, 64


def sweep_config(plugins: list[str], impl: list[str], name: str = "plugins") -> dict:
    return {"name": name, "device": "cpu", "seed": 0, "dtype": "float16", "timing": {"cpu_reps": 1},
            "plugins": plugins,
            "sweep": {"op": "matmul", "impl": impl, "bits": 4, "granularity": "channel", "M": M, "N": N, "K": K}}


@contextmanager
def fresh_module(name: str):
    """`name` is imported afresh inside, and forgotten afterwards (whatever was imported before
    is put back), so that no test sees another's copy of a plugin."""
    saved = sys.modules.pop(name, None)
    try:
        yield
    finally:
        sys.modules.pop(name, None)
        if saved is not None:
            sys.modules[name] = saved


@pytest.fixture
def no_example_module():
    with fresh_module("quantbench_example"):
        yield


# --- through a config's `plugins:` ----------------------------------------------------------------

@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """A tiny matmul sweep with built-ins and the example's three implementations, the example
    put on sys.path and named under `plugins:` (the no-install route the README gives)."""
    impl = ["triton", "torch", "fp16", *EXAMPLE_IMPLS]
    cfg = parse_config(sweep_config(["quantbench_example"], impl))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLE))
        with fresh_module("quantbench_example"):
            writer = run_sweep(cfg, tmp_path_factory.mktemp("results"), device="cpu", show_progress=False)
    df, meta = load_run(writer.path)
    return cfg, df.set_index("impl"), meta


def test_plugin_rows_carry_their_roles(plugin_run):
    _, df, _ = plugin_run
    assert df["role"].to_dict() == {"triton": "candidate", "torch": "reference", "fp16": "baseline",
                                    **EXAMPLE_IMPLS}


def test_example_candidate_and_peer_are_verified_ok(plugin_run):
    _, df, _ = plugin_run
    bound = 2 * torch.finfo(torch.float16).eps + K * torch.finfo(torch.float32).eps  # the matmul rule
    for name in ("example_dequant_mm", "example_int8_rowwise"):
        row = df.loc[name]
        assert row["status"] == "ok", (name, row["message"])
        assert row["kernel_rel_err"] < bound, name
        assert math.isfinite(row["ms"]) and row["ms"] > 0, name
    # the candidate dequantizes the case's int4 weights: its product is the reference's, bit for bit
    assert df.loc["example_dequant_mm", "kernel_rel_err"] == df.loc["torch", "kernel_rel_err"]


def test_wrong_plugin_is_an_error_naming_the_mismatch(plugin_run):
    _, df, _ = plugin_run
    row = df.loc["example_wrong"]
    assert row["status"] == "error"
    assert "relative error" in row["message"] and "against the float64 product exceeds" in row["message"]
    assert row["kernel_rel_err"] > 0.01  # dropping one of 64 columns of K is far outside float rounding
    # and the sweep went on: every other row is ok
    assert (df.drop(index="example_wrong")["status"] == "ok").all(), df["message"].to_dict()


def test_plugin_peers_are_verified_and_baselines_are_not(plugin_dir):
    """The roles decide the checking: a PEER off by 1% is an error like a candidate; a BASELINE
    (dense, unquantized) is not checked against the quantized product at all."""
    write_plugin(plugin_dir, "qb_plugin_roles", textwrap.dedent("""
        from quantbench import Impl, Role
        from quantbench.kernels import dequantize_ref
        def off(inp):
            return lambda: 1.01 * (inp.x @ dequantize_ref(inp.q, inp.x.dtype).t())
        def quantbench_impls():
            return [Impl(op="matmul", name="off_peer", role=Role.PEER, factory=off),
                    Impl(op="matmul", name="off_baseline", role=Role.BASELINE, factory=off)]
    """))
    cfg = parse_config(sweep_config(["qb_plugin_roles"], ["torch", "off_peer", "off_baseline"], name="roles"))
    df, _ = load_run(run_sweep(cfg, plugin_dir / "results", device="cpu", show_progress=False).path)
    status = df.set_index("impl")[["role", "status"]].apply(tuple, axis=1).to_dict()
    assert status == {"torch": ("reference", "ok"), "off_peer": ("peer", "error"),
                      "off_baseline": ("baseline", "ok")}


def test_an_output_of_the_wrong_shape_is_an_error_not_broadcast(plugin_dir):
    """Elementwise checks broadcast: the right product repeated as [3, M, N] passed them, and a
    returned non-tensor failed with whatever the check tripped on. The reference's shape decides."""
    write_plugin(plugin_dir, "qb_plugin_shapes", textwrap.dedent("""
        from quantbench import Impl, Role
        from quantbench.kernels import dequantize_ref
        def product(inp):
            return inp.x @ dequantize_ref(inp.q, inp.x.dtype).t()
        def quantbench_impls():
            return [Impl(op="matmul", name="repeated", role=Role.CANDIDATE,
                         factory=lambda inp: lambda: product(inp).expand(3, -1, -1)),
                    Impl(op="matmul", name="listed", role=Role.CANDIDATE,
                         factory=lambda inp: lambda: [product(inp)]),
                    Impl(op="matmul", name="right", role=Role.CANDIDATE, factory=lambda inp: lambda: product(inp))]
    """))
    cfg = parse_config(sweep_config(["qb_plugin_shapes"], ["torch", "repeated", "listed", "right"], name="shapes"))
    df, _ = load_run(run_sweep(cfg, plugin_dir / "results", device="cpu", show_progress=False).path)
    rows = df.set_index("impl")
    assert rows.loc["right", "status"] == "ok" and rows.loc["torch", "status"] == "ok"
    assert rows.loc["repeated", "status"] == "error"
    assert rows.loc["repeated", "message"] == f"output has shape [3, {M}, {N}], expected [{M}, {N}] (the reference's)"
    assert rows.loc["listed", "status"] == "error" and "returned a list, expected a tensor" in rows.loc["listed",
                                                                                                       "message"]


def test_a_plugin_that_exits_is_a_failed_case_and_the_sweep_goes_on(plugin_dir):
    """sys.exit in a plugin's callable ended the whole run with its exit status, no row, no word."""
    write_plugin(plugin_dir, "qb_plugin_exits", textwrap.dedent("""
        import sys
        from quantbench import Impl, Role
        def quantbench_impls():
            return [Impl(op="matmul", name="exits", role=Role.CANDIDATE, factory=lambda inp: lambda: sys.exit(3))]
    """))
    cfg = parse_config(sweep_config(["qb_plugin_exits"], ["torch", "exits", "triton"], name="exits"))
    df, _ = load_run(run_sweep(cfg, plugin_dir / "results", device="cpu", show_progress=False).path)
    rows = df.set_index("impl")
    assert rows.loc["exits", "status"] == "error" and rows.loc["exits", "message"] == "SystemExit: 3"
    assert rows.loc["torch", "status"] == "ok" and rows.loc["triton", "status"] == "ok"


def _by_hand(cfg) -> dict[str, float]:
    """The int8 rowwise format computed here, independently of the plugin, on the run's weights and
    activations: its weight error, the method error of its product, and its bytes."""
    w = make_weights(cfg.weights, cfg.seed, N, K, cfg.dtype, "cpu").double()
    scale = w.abs().amax(dim=1, keepdim=True).float() / 127
    w_hat = (torch.round(w.float() / scale).clamp(-127, 127) * scale).double()
    mse = (w_hat - w).square().mean().item()
    x = activations(cfg.seed, M, K, cfg.dtype, "cpu").double()
    y_exact, y_own = x @ w.t(), x @ w_hat.t()
    return {"mse": mse, "snr_db": 10 * math.log10(w.square().mean().item() / mse),
            "method_rel_err": ((y_own - y_exact).norm() / y_exact.norm()).item(), "weight_bytes": N * K + 4 * N}


def test_own_format_row_reports_its_own_bytes_and_error(plugin_run):
    cfg, df, _ = plugin_run
    row, hand = df.loc["example_int8_rowwise"], _by_hand(cfg)
    assert row["weight_bytes"] == hand["weight_bytes"] == N * K + 4 * N
    assert row["bits_per_weight"] == pytest.approx(8 * (N * K + 4 * N) / (N * K))
    assert row["compression_vs_fp16"] == pytest.approx(2 * N * K / (N * K + 4 * N))
    for col in ("mse", "snr_db", "method_rel_err"):
        assert row[col] == pytest.approx(hand[col], rel=1e-9), col
    # int8 with a scale per row is far more accurate than the case's int4, and reported as such
    assert row["snr_db"] > df.loc["triton", "snr_db"] + 15


def test_builtin_rows_keep_the_case_format_figures(plugin_run):
    """Beside an own-format row, the triton row still reports the case's int4 weights."""
    cfg, df, _ = plugin_run
    w = make_weights(cfg.weights, cfg.seed, N, K, cfg.dtype, "cpu")
    spec = QuantSpec(4, "asymmetric", "channel", None)
    int4 = metrics.weight_error(w, kernels.dequantize_ref(kernels.quantize_ref(w, spec), torch.float32))
    row = df.loc["triton"]
    assert row["weight_bytes"] == spec.nbytes(N, K, torch.float16) != N * K + 4 * N
    for col in ("mse", "snr_db"):
        assert row[col] == pytest.approx(int4[col], rel=1e-9), col
        assert row[col] != pytest.approx(df.loc["example_int8_rowwise", col], rel=1e-3), col


def test_meta_lists_plugin_implementations_with_their_origin(plugin_run):
    _, _, meta = plugin_run
    by_name = {i["name"]: i for i in meta["impls"]}
    assert set(by_name) == {"triton", "torch", "fp16", *EXAMPLE_IMPLS}
    for name, role in EXAMPLE_IMPLS.items():
        assert by_name[name] == {"op": "matmul", "name": name, "role": role,
                                 "origin": "plugin module quantbench_example"}
    assert by_name["triton"]["origin"] == "built-in"


# --- through an installed entry point ------------------------------------------------------------

def _example_eps():
    return [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.value == "quantbench_example:quantbench_impls"]


def test_installed_entry_point_is_discovered_and_removed_cleanly(tmp_path, no_example_module):
    """pip installs the example into a throwaway --target folder (a copy of the source, so that
    the build leaves nothing in examples/); with that folder on sys.path, importlib.metadata sees
    its entry point and load_registry() includes its implementations without any `plugins:`."""
    assert not _example_eps(), "quantbench_example is installed in this environment already"
    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.syspath_prepend(str(target))
            (ep,) = _example_eps()
            assert ep.name == "example" and ep.dist.name == "quantbench-example"
            registry = load_registry()
            origin = "entry point example (quantbench_example:quantbench_impls)"
            plugin = {i.name: (i.role.value, i.origin) for i in registry.of("matmul") if i.origin != "built-in"}
            assert plugin == {name: (role, origin) for name, role in EXAMPLE_IMPLS.items()}
            # what was loaded is the installed copy, not examples/plugin
            assert Path(sys.modules["quantbench_example"].__file__).is_relative_to(target)
            # installed and also named under `plugins:`: loaded once, through the entry point
            both = load_registry(["quantbench_example"])
            assert [i.origin for i in both.impls if i.origin != "built-in"] == [origin] * len(EXAMPLE_IMPLS)
    finally:
        shutil.rmtree(target)
        sys.modules.pop("quantbench_example", None)
    assert not _example_eps()
    assert not [i for i in load_registry().impls if i.origin != "built-in"]


# --- broken plugins --------------------------------------------------------------------------------

IMPL = "from quantbench import Impl, Role\nFACTORY = lambda inp: lambda: inp.x\n"
BROKEN = {
    "import_fails": ("import quantbench_no_such_module\n", r"cannot be imported: ModuleNotFoundError"),
    "raises_on_import": ("raise RuntimeError('plugin exploded')\n", r"cannot be imported: RuntimeError: plugin exploded"),
    "no_hook": ("X = 1\n", r"defines no function quantbench_impls\(\)"),
    "hook_raises": ("def quantbench_impls():\n    raise ValueError('no records today')\n",
                    r"quantbench_impls\(\) raised ValueError: no records today"),
    "returns_dict": (IMPL + "def quantbench_impls():\n"
                     "    return {'mine': Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY)}\n",
                     r"must return a list of quantbench.Impl records, got dict"),
    "returns_non_impl": (IMPL + "def quantbench_impls():\n"
                         "    return [Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY), 'mine2']\n",
                         r"must return a list of quantbench.Impl records, got str"),
    "reuses_builtin_name": (IMPL + "def quantbench_impls():\n"
                            "    return [Impl(op='matmul', name='triton', role=Role.CANDIDATE, factory=FACTORY)]\n",
                            r"'triton' of 'matmul': the name is already taken by built-in"),
    "unknown_op": (IMPL + "def quantbench_impls():\n"
                   "    return [Impl(op='conv2d', name='mine', role=Role.CANDIDATE, factory=FACTORY)]\n",
                   r"'mine' of 'conv2d': unknown op"),
    "declares_reference": (IMPL + "def quantbench_impls():\n"
                           "    return [Impl(op='matmul', name='mine', role=Role.REFERENCE, factory=FACTORY)]\n",
                           r"'mine' of 'matmul': each op has one reference, the built-in one"),
    # fields of the wrong type, which failed later with an AttributeError or a TypeError
    "name_a_number": (IMPL + "def quantbench_impls():\n"
                      "    return [Impl(op='matmul', name=123, role=Role.CANDIDATE, factory=FACTORY)]\n",
                      r"123 of 'matmul': a name is a text"),
    "needs_a_tuple": (IMPL + "def quantbench_impls():\n"
                      "    return [Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY,"
                      " needs=('numpy',))]\n", r"needs must be a quantbench.Needs, got tuple"),
    "path_a_text": (IMPL + "def quantbench_impls():\n"
                    "    return [Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY, path='gemv')]\n",
                    r"path must be a function of the inputs \(or None\), got str"),
    "description_a_number": (IMPL + "def quantbench_impls():\n"
                             "    return [Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY,"
                             " description=7)]\n", r"description must be a text, got int"),
}


def write_plugin(directory: Path, name: str, source: str) -> str:
    (directory / f"{name}.py").write_text(source)
    importlib.invalidate_caches()  # a folder already on sys.path: let the import system see the new file
    return name


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throwaway plugin modules, which are forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("qb_plugin_"):
            del sys.modules[name]


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_plugin_is_a_plugin_error_naming_it(plugin_dir, case):
    source, problem = BROKEN[case]
    module = write_plugin(plugin_dir, f"qb_plugin_{case}", source)
    with pytest.raises(PluginError, match=rf"^plugin module {module}: .*{problem}") as raised:
        load_registry([module])
    assert isinstance(raised.value, ConfigError)  # so the CLI reports it as a config error
    assert "\n" not in str(raised.value)


def test_missing_plugin_module_is_a_plugin_error_naming_it():
    with pytest.raises(PluginError, match=r"^plugin module qb_plugin_nowhere: cannot be imported: ModuleNotFoundError"):
        load_registry(["qb_plugin_nowhere"])


def test_a_good_plugin_beside_a_broken_one_does_not_hide_the_error(plugin_dir):
    good = write_plugin(plugin_dir, "qb_plugin_good", BROKEN["returns_dict"][0].replace(
        "return {'mine': Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY)}",
        "return [Impl(op='matmul', name='mine', role=Role.CANDIDATE, factory=FACTORY)]"))
    assert load_registry([good]).get("matmul", "mine").origin == f"plugin module {good}"
    bad = write_plugin(plugin_dir, "qb_plugin_bad", BROKEN["unknown_op"][0])
    with pytest.raises(PluginError, match=rf"^plugin module {bad}: "):
        load_registry([good, bad])


def test_cli_run_with_a_broken_plugin_exits_2_with_one_line(tmp_path):
    module = write_plugin(tmp_path, "qb_plugin_cli_reference", BROKEN["declares_reference"][0])
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(json.dumps(sweep_config([module], ["triton", "torch"], name="broken-plugin")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "run", str(cfg_file), "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    header, *lines = done.stderr.strip().splitlines()
    assert header == "config error:"
    assert len(lines) == 1 and lines[0].startswith(f"plugin module {module}: implementation 'mine' of 'matmul'"), lines
    assert not out.exists() or not any(out.iterdir())  # nothing was run


def test_a_failing_case_is_counted_and_fails_the_run_only_with_strict(tmp_path, plugin_dir, capsys):
    """A candidate that raises gets an error row and the sweep goes on; the run says how many rows
    did not pass, and exits 0, or 1 with --strict (asv run --strict's convention)."""
    module = write_plugin(plugin_dir, "qb_plugin_raises", "from quantbench import Impl, Role\n"
                          "def boom(inp):\n    def call():\n        raise RuntimeError('kaput')\n    return call\n"
                          "def quantbench_impls():\n"
                          "    return [Impl(op='matmul', name='boom', role=Role.CANDIDATE, factory=boom)]\n")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(json.dumps(sweep_config([module], ["triton", "torch", "boom"], name="failing")))
    for extra, rc in (([], 0), (["--strict"], 1)):
        assert cli.main(["run", str(cfg_file), "--out", str(tmp_path / "out"), "--no-progress", *extra]) == rc
        assert "1 rows did not pass (error: 1): results.csv's message column says why" in capsys.readouterr().out


# --- the command line and the config ---------------------------------------------------------------

def test_list_shows_example_implementations_with_roles(monkeypatch, capsys, no_example_module):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert cli.main(["list", "--plugin", "quantbench_example"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, role in EXAMPLE_IMPLS.items():
        (line,) = [line for line in lines if f" {name} " in line]
        cells = [cell.strip() for cell in line.split("│")]
        assert cells[1:6] == ["matmul", name, role, "-", "plugin module quantbench_example"], cells
    (own,) = [line for line in lines if " example_int8_rowwise " in line]
    assert "(own weight format)" in own


def test_misspelt_impl_name_is_a_config_error_with_a_suggestion(monkeypatch, no_example_module):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    cfg = parse_config(sweep_config(["quantbench_example"], ["torch", "exmple_dequant_mm"]))
    with pytest.raises(ConfigError, match=r"no implementation 'exmple_dequant_mm' of matmul "
                                          r"\(did you mean 'example_dequant_mm'\?\)"):
        expand(cfg)
    # the same name spelt right expands, through the plugin
    assert [c.impl for c in expand(parse_config(sweep_config(["quantbench_example"], ["example_dequant_mm"])))] \
        == ["example_dequant_mm"]
