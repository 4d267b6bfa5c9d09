"""The registry of implementations: records with roles, what roles decide (verification, the dense
baseline's error and memory, what tables put first), what a missing need gives, and runs from
before the role column."""

from pathlib import Path

import pytest
import torch

from quantbench import Impl, Needs, Role
from quantbench.harness.config import OP_NAMES, load_config
from quantbench.harness.ops import OPS
from quantbench.harness.registry import load_registry
from quantbench.harness.results import LEGACY_ROLES, load_run
from quantbench.harness.execution.sweep import run_sweep
from quantbench.harness.analysis.tables import op_table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
name: reg
device: cpu
timing: {cpu_reps: 1}
sweep: {op: matmul, impl: [triton, torch, torch_compile, fp16], bits: 4, granularity: channel, M: [2], N: [16], K: [64]}
"""


def sweep(tmp_path, text=CONFIG):
    path = tmp_path / "reg.yaml"
    path.write_text(text)
    df, meta = load_run(run_sweep(load_config(path), tmp_path, device="cpu", show_progress=False).path)
    return df.set_index("impl"), meta


def test_every_op_has_a_contract_and_one_built_in_reference():
    registry = load_registry(entry_points=False)
    assert tuple(OPS) == OP_NAMES
    for op in OP_NAMES:
        roles = [impl.role for impl in registry.of(op)]
        assert roles.count(Role.REFERENCE) == 1 and Role.CANDIDATE in roles, op
    assert {impl.origin for impl in registry.impls} == {"built-in"}


def test_roles_decide_what_is_verified_and_what_is_the_dense_baseline(tmp_path, swap_impl):
    # a peer is verified: torch.compile of the reference, made wrong, comes out an error
    from quantbench.kernels import qmatmul_ref
    swap_impl("matmul", "torch_compile", lambda inp: lambda: qmatmul_ref(inp.x, inp.q) * 1.01)
    # the baseline is not verified against the quantized product: it multiplies the original weights
    df, meta = sweep(tmp_path)
    assert df.loc["torch_compile", "status"] == "error" and "exceeds" in df.loc["torch_compile", "message"]
    assert df.loc["triton", "status"] == "ok" and df.loc["fp16", "status"] == "ok"
    assert df["role"].to_dict() == {"triton": "candidate", "torch": "reference", "torch_compile": "peer",
                                    "fp16": "baseline"}
    # the baseline's rows carry the dense weight's memory and no quantization error
    assert df.loc["fp16", "weight_bytes"] == 16 * 64 * 2 and df.loc["fp16", "bits_per_weight"] == 16
    assert df.loc["fp16", "mse"] == 0 and df.loc["triton", "mse"] > 0
    assert [i["name"] for i in meta["impls"]] == ["triton", "torch", "torch_compile", "fp16"]
    assert {i["role"] for i in meta["impls"]} == {"candidate", "reference", "peer", "baseline"}


def test_a_table_puts_every_candidate_first(tmp_path):
    """Two candidates (the project's kernel and a second one) each get their speedups over the others."""
    import pandas as pd
    df, _ = sweep(tmp_path)
    df = df.reset_index()
    triton_ms = df.loc[df["impl"] == "triton", "ms"].iloc[0]
    second = df[df["impl"] == "torch_compile"].assign(role="candidate", ms=2 * triton_ms)
    table = op_table(pd.concat([df[df["impl"] != "torch_compile"], second], ignore_index=True), "matmul")
    row = table.iloc[0]
    assert row["triton vs torch_compile"] == pytest.approx(2.0)
    assert row["torch_compile vs triton"] == pytest.approx(0.5)
    assert {"triton vs fp16", "torch_compile vs fp16", "GB/s triton", "GB/s torch_compile"} <= set(table.columns)
    assert not any(c.startswith(("fp16 vs", "torch vs")) for c in table.columns)


def test_a_missing_need_is_a_skipped_row_that_names_it():
    cpu = torch.device("cpu")
    assert Needs(cuda=True).missing(cpu) == "needs a CUDA GPU"
    assert Needs(packages=("no_such_package_xyz",)).missing(cpu) == \
        "needs the Python package 'no_such_package_xyz', which is not installed"
    assert Needs(packages=("json",)).missing(cpu) is None and Needs().missing(cpu) is None
    assert Needs(min_capability=(8, 0)).missing(cpu) == "needs a CUDA GPU"


def test_a_built_in_that_needs_cuda_is_skipped_on_the_cpu_with_its_name(tmp_path):
    df, _ = sweep(tmp_path, CONFIG.replace("impl: [triton, torch, torch_compile, fp16]", "impl: [torch, tinygemm]"))
    assert df.loc["tinygemm", "status"] == "skipped" and df.loc["tinygemm", "message"] == "tinygemm needs a CUDA GPU"


def test_impl_records_are_frozen_keyword_only_with_defaults():
    impl = Impl(op="matmul", name="x", role=Role.PEER, factory=lambda inp: lambda: None)
    assert impl.needs == Needs() and impl.own_format is None and impl.origin == "built-in"
    with pytest.raises(TypeError):
        Impl("matmul", "x", lambda inp: None, Role.PEER)  # positional: refused
    with pytest.raises(Exception):
        impl.name = "y"


def test_runs_from_before_the_role_column_read_the_built_ins_roles():
    df, meta = load_run(ROOT / "results/h200/matmul-20261123T233436Z")
    assert meta["schema_version"] == 2
    assert (df["role"] == df["impl"].map(LEGACY_ROLES)).all() and df["role"].notna().all()
    assert set(df["role"]) == {"candidate", "reference", "baseline", "peer"}
