"""bitsandbytes as optional PEER implementations (harness/registry/bitsandbytes_peers.py): without
bitsandbytes every record is a `skipped` row naming it; each record refuses, by a Skipped that
says what it runs, the formats it does not run; the own-format plumbing of quantize and
dequantize (weight_ops: with_own, verify, error, memory) through a sweep; and, where bitsandbytes
is installed, the own formats on the CPU against bitsandbytes itself: bytes counted from the
QuantState's tensors, W_hat equal to its dequantization, rows ok in a sweep, and the LLM.int8
product against bitsandbytes' own CPU result."""

import importlib.util
import textwrap
from types import SimpleNamespace

import pytest
import torch

from quantbench.harness.config import parse_config
from quantbench.harness.config.schema import NormalWeights
from quantbench.harness.execution.case import measure_case
from quantbench.harness.execution.sweep import run_sweep
from quantbench.harness.ops import OPS, Skipped, metrics
from quantbench.harness.ops.inputs import make_weights
from quantbench.harness.ops.matmul import product_problem
from quantbench.harness.registry import Needs, Role, load_registry, peers
from quantbench.harness.registry import bitsandbytes_peers as bnb_peers
from quantbench.harness.results import load_run

BNB_RECORDS = {("matmul", "bnb_nf4"), ("matmul", "bnb_int8"), ("quantize", "bnb_nf4"), ("dequantize", "bnb_nf4")}
MISSING = "needs the Python package 'bitsandbytes', which is not installed"


def bnb_impls():
    return [impl for impl in load_registry(entry_points=False).impls if impl.name.startswith("bnb_")]


def case(**axes):
    """A case as own_format sees it (the axes it reads), NF4 with blocks of 64 unless told."""
    base = dict(op="matmul", bits=4, scheme="nf4", granularity="group", group_size=64, dtype="float16",
                M=3, N=64, K=128)
    return SimpleNamespace(**{**base, **axes})


def sweep(tmp_path, sweep_axes: dict, plugins=()):
    cfg = parse_config({"name": "bnb", "device": "cpu", "seed": 0, "timing": {"cpu_reps": 1},
                        "plugins": list(plugins), "sweep": sweep_axes})
    df, _ = load_run(run_sweep(cfg, tmp_path, device="cpu", show_progress=False).path)
    return df


@pytest.fixture
def no_bitsandbytes(monkeypatch):
    """bitsandbytes not installed, whether or not it is."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))


# --- without bitsandbytes (CI) -------------------------------------------------------------------

def test_the_records_are_cuda_peers_that_need_bitsandbytes_on_their_own_formats():
    impls = bnb_impls()
    assert {(i.op, i.name) for i in impls} == BNB_RECORDS
    for impl in impls:
        assert impl.role is Role.PEER and impl.origin == "built-in"
        assert impl.needs == Needs(cuda=True, packages=("bitsandbytes",))
        assert impl.own_format is not None and impl.description.startswith("bitsandbytes ")


def test_without_bitsandbytes_each_record_is_a_skipped_row_naming_it(no_bitsandbytes):
    # on a GPU machine without bitsandbytes: the need is checked before anything touches the GPU
    for impl in bnb_impls():
        rows = measure_case(OPS[impl.op], impl, case=None, inputs=None, ref_out=None, ref_error=None, cfg=None,
                            device=torch.device("cuda"), calibration={})
        assert rows == [{"status": "skipped", "message": f"{impl.name} {MISSING}"}], impl


def test_on_the_cpu_each_record_is_a_skipped_row_in_a_sweep(tmp_path):
    df = sweep(tmp_path, {"op": ["quantize", "dequantize", "matmul"], "impl": ["torch", "bnb_nf4", "bnb_int8"],
                          "bits": [4, 8], "scheme": ["nf4", "symmetric"], "granularity": ["channel", "group"],
                          "group_size": 64, "M": 2, "N": 16, "K": 64})
    bnb = df[df["impl"].str.startswith("bnb_")]
    assert set(zip(bnb["op"], bnb["impl"])) == BNB_RECORDS
    assert (bnb["status"] == "skipped").all()
    assert (bnb["message"] == bnb["impl"] + " needs a CUDA GPU").all(), bnb["message"].tolist()
    assert (df[df["impl"] == "torch"]["status"] == "ok").all()


@pytest.mark.parametrize("axes", [dict(scheme="asymmetric"), dict(scheme="symmetric"), dict(bits=8, scheme="fp8"),
                                  dict(granularity="channel", group_size=None)])
def test_nf4_records_refuse_other_formats_naming_what_they_run(axes):
    for impl in bnb_impls():
        if impl.name == "bnb_nf4":
            with pytest.raises(Skipped, match="bitsandbytes NF4 runs the nf4 and nf4_dq schemes"):
                impl.own_format(torch.zeros(64, 128), case(**axes))


def test_nf4_refuses_blocks_bitsandbytes_does_not_take_or_that_straddle_rows():
    nf4 = load_registry(entry_points=False).get("matmul", "bnb_nf4")
    with pytest.raises(Skipped, match="blocksize is one of 32, 64, 128, 256, 512, 1024, 2048, 4096, not group_size 16"):
        nf4.own_format(torch.zeros(64, 128), case(group_size=16))
    with pytest.raises(Skipped, match="K=96 not a multiple of group_size 64 they would straddle rows"):
        nf4.own_format(torch.zeros(64, 96), case(K=96))


@pytest.mark.parametrize("axes, why", [
    (dict(), "runs 8-bit symmetric per-channel cases only, not 4-bit nf4 per group"),
    (dict(bits=8, scheme="asymmetric", granularity="channel"), "not 8-bit asymmetric per channel"),
    (dict(bits=8, scheme="symmetric", granularity="group"), "not 8-bit symmetric per group"),
    (dict(bits=8, scheme="symmetric", granularity="channel", dtype="bfloat16"), "in float16 .* float16 cases only"),
    (dict(bits=8, scheme="symmetric", granularity="channel", dtype="float32"), "casts float32 activations"),
])
def test_llm_int8_refuses_other_formats_and_dtypes_naming_what_it_runs(axes, why):
    int8 = load_registry(entry_points=False).get("matmul", "bnb_int8")
    with pytest.raises(Skipped, match=why):
        int8.own_format(torch.zeros(64, 128), case(**axes))


# --- the own format of quantize and dequantize, through a sweep (no bitsandbytes needed) --------

OWN_ROWWISE = textwrap.dedent("""
    import torch
    from quantbench import Impl, OwnWeights, Role

    def rowwise(w):
        w = w.float()
        s = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        return torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8), s

    def decode(out):
        codes, s = out
        return codes.float() * s[:, None]

    def own(w, case):
        codes, s = rowwise(w)
        return OwnWeights(state=(codes, s), w_hat=decode((codes, s)), weight_bytes=codes.numel() + 4 * s.numel(),
                          decode=decode)

    def quantbench_impls():
        return [
            Impl(op="quantize", name="rowwise", role=Role.PEER, own_format=own,
                 factory=lambda inp: lambda: rowwise(inp.w)),
            Impl(op="quantize", name="rowwise_off", role=Role.PEER, own_format=own,
                 factory=lambda inp: lambda: (rowwise(inp.w)[0], 1.01 * rowwise(inp.w)[1])),
            Impl(op="dequantize", name="rowwise", role=Role.PEER, own_format=own,
                 factory=lambda inp: lambda: decode(inp.own).to(inp.w.dtype)),
            Impl(op="dequantize", name="rowwise_off", role=Role.PEER, own_format=own,
                 factory=lambda inp: lambda: (1.01 * decode(inp.own)).to(inp.w.dtype)),
        ]
""")


def test_quantize_and_dequantize_rows_are_verified_and_measured_on_an_own_format(tmp_path, monkeypatch):
    """A format with per-row float32 scales (not the case's float16 ones): its rows are ok, carry
    its own bytes and the error of its own W_hat; 1% off in the scales is an error naming it."""
    (tmp_path / "qb_plugin_own_rowwise.py").write_text(OWN_ROWWISE)
    monkeypatch.syspath_prepend(str(tmp_path))
    n, k = 16, 64
    df = sweep(tmp_path, {"op": ["quantize", "dequantize"], "impl": ["torch", "rowwise", "rowwise_off"],
                          "bits": 8, "scheme": "symmetric", "N": n, "K": k}, plugins=["qb_plugin_own_rowwise"])
    df = df.set_index(["op", "impl"])
    w = make_weights(NormalWeights(), 0, n, k, "float16", "cpu")  # the sweep's weights, to check its error
    for op in ("quantize", "dequantize"):
        row, off = df.loc[(op, "rowwise")], df.loc[(op, "rowwise_off")]
        assert row["status"] == "ok", (op, row["message"])
        assert off["status"] == "error" and "differ from the format's own W_hat" in off["message"], op
        assert row["weight_bytes"] == n * k + 4 * n and row["bits_per_weight"] == 8 + 32 / k
        # the case's format stores float16 scales: its rows keep the case's bytes
        assert df.loc[(op, "torch"), "weight_bytes"] == n * k + 2 * n
        assert off["mse"] > row["mse"] > 0
    s = w.float().abs().amax(dim=1) / 127
    w_hat = torch.round(w.float() / s[:, None]).clamp(-127, 127) * s[:, None]
    assert df.loc[("quantize", "rowwise"), "mse"] == pytest.approx(metrics.weight_error(w, w_hat)["mse"], rel=1e-12)


# --- with bitsandbytes installed: its own formats, on the CPU -----------------------------------

def bitsandbytes_functional():
    pytest.importorskip("bitsandbytes")
    from bitsandbytes import functional
    return functional


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("scheme", ["nf4", "nf4_dq"])
@pytest.mark.parametrize("group", [32, 64])
def test_nf4_format_is_bitsandbytes_own_and_counts_every_byte_its_quant_state_keeps(dtype, scheme, group, gen):
    F = bitsandbytes_functional()
    n, k = 48, 256
    w = torch.randn(n, k, generator=gen).to(getattr(torch, dtype))
    own = bnb_peers.nf4_weights(w, case(scheme=scheme, group_size=group, dtype=dtype, N=n, K=k))
    packed, state = own.state
    assert (state.quant_type, state.blocksize, state.nested, state.dtype) == ("nf4", group, scheme == "nf4_dq", w.dtype)
    assert torch.equal(own.w_hat, F.dequantize_4bit(packed, state).float()) and own.w_hat.shape == (n, k)
    held = [packed, state.absmax, state.code] + ([state.offset, state.state2.absmax, state.state2.code]
                                                 if state.nested else [])
    assert own.weight_bytes == sum(t.numel() * t.element_size() for t in held)
    # the same count from the format: 4-bit codes, then float32 absmax per block, or uint8 absmax
    # codes with a float32 absmax per 256 of them, the offset and the 256-entry map; the NF4 table
    blocks = n * k // group
    scales = blocks + 4 * -(-blocks // 256) + 4 + 256 * 4 if state.nested else 4 * blocks
    assert own.weight_bytes == n * k // 2 + scales + 16 * 4
    # the quantize op's own format: the same W_hat and bytes, and a decode of what the call returns
    quantize = bnb_peers.nf4_quantize_format(w, case(scheme=scheme, group_size=group, dtype=dtype, N=n, K=k))
    assert quantize.state == (group, scheme == "nf4_dq") and quantize.weight_bytes == own.weight_bytes
    assert torch.equal(quantize.w_hat, own.w_hat)
    out = bnb_peers.quantize_4bit(SimpleNamespace(w=w, own=quantize.state))()
    assert torch.equal(out[0], packed) and torch.equal(quantize.decode(out).float(), own.w_hat)


@pytest.fixture
def bnb_on_the_cpu(monkeypatch):
    """The bitsandbytes records with their need of a GPU lifted, and Linear4bit on bitsandbytes'
    generic path (dequantize_4bit, then F.linear: what it falls back to on a GPU) rather than the
    bfloat16 repacking it does on CPUs with AVX512-BF16."""
    pytest.importorskip("bitsandbytes")
    import dataclasses

    import bitsandbytes.nn.modules
    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: False)
    cpu = Needs(packages=("bitsandbytes",))
    monkeypatch.setattr(peers, "PEER_IMPLS", [dataclasses.replace(i, needs=cpu) if i.name.startswith("bnb_") else i
                                              for i in peers.PEER_IMPLS])


def test_nf4_rows_are_verified_ok_on_bitsandbytes_own_weights_and_bytes(tmp_path, bnb_on_the_cpu):
    n, k, group = 64, 128, 64
    df = sweep(tmp_path, {"op": ["quantize", "dequantize", "matmul"], "impl": ["torch", "bnb_nf4"], "bits": 4,
                          "scheme": ["nf4", "nf4_dq"], "granularity": "group", "group_size": group, "M": [1, 3],
                          "N": n, "K": k, "dtype": ["float16", "bfloat16", "float32"]})
    bnb = df[df["impl"] == "bnb_nf4"]
    assert len(bnb) == 2 * 3 * (1 + 1 + 2) and (bnb["status"] == "ok").all(), bnb["message"].tolist()
    blocks = n * k // group
    nested = bnb["scheme"] == "nf4_dq"
    expected = n * k // 2 + 64 + nested.map({True: blocks + 4 * -(-blocks // 256) + 4 + 1024, False: 4 * blocks})
    assert (bnb["weight_bytes"] == expected).all()
    # one format, one W_hat: every op's row of a format and dtype has the same weight error
    for (_, _), rows in bnb.groupby(["scheme", "dtype"]):
        assert rows["mse"].nunique() == 1 and rows["mse"].iloc[0] > 0



def test_llm_int8_rows_are_verified_ok_against_its_own_product(tmp_path, bnb_on_the_cpu):
    n, k = 48, 96
    df = sweep(tmp_path, {"op": "matmul", "impl": ["torch", "bnb_int8"], "bits": 8, "scheme": "symmetric",
                          "M": [1, 5], "N": n, "K": k, "dtype": ["float16", "bfloat16"]})
    rows = df[df["impl"] == "bnb_int8"].set_index(["dtype", "M"])
    for m in (1, 5):
        row = rows.loc[("float16", m)]
        assert row["status"] == "ok", row["message"]
        assert row["weight_bytes"] == n * k + 4 * n and row["method_rel_err"] > 0
        assert rows.loc[("bfloat16", m), "status"] == "skipped"
        assert "computes in float16" in rows.loc[("bfloat16", m), "message"]

def test_llm_int8_weights_are_int8_params_own_quantization(gen):
    F = bitsandbytes_functional()
    n, k = 40, 96
    w = (0.05 * torch.randn(n, k, generator=gen)).half()
    own = bnb_peers.int8_weights(w, case(bits=8, scheme="symmetric", granularity="channel", group_size=None))
    cb, scb = own.state
    ref_cb, ref_scb, _ = F.int8_vectorwise_quant(w.clone())
    assert torch.equal(cb, ref_cb) and torch.equal(scb, ref_scb) and cb.dtype == torch.int8
    assert torch.equal(scb, w.float().abs().amax(dim=1)) and (cb.abs().amax(dim=1) == 127).all()
    assert own.weight_bytes == n * k + 4 * n
    close = torch.isclose(own.w_hat, cb.float() * scb[:, None] / 127, rtol=torch.finfo(torch.float32).eps, atol=0)
    assert own.w_hat.dtype == torch.float32 and close.all()


def int8_activations_with_outliers(gen, m: int, k: int) -> torch.Tensor:
    """Normal activations with outliers: above the threshold, at it (an outlier: |x| >= 6) and just
    under it (not one: it is in its row's absmax)."""
    x = torch.randn(m, k, generator=gen).half()
    x[0, 3], x[m - 1, 10], x[m // 2, 20] = 7.5, -9.0, bnb_peers.INT8_THRESHOLD
    x[m - 1, 30] = torch.tensor(bnb_peers.INT8_THRESHOLD).half() - 2 ** -8  # the largest float16 under 6
    return x


@pytest.mark.parametrize("m", [1, 5, 33])
def test_llm_int8_activation_codes_are_bitsandbytes_own(m, gen):
    F = bitsandbytes_functional()
    k = 96
    x = int8_activations_with_outliers(gen, m, k)
    codes, absmax, columns = bnb_peers.int8_activations(x)
    ref_codes, ref_absmax, ref_columns = F.int8_vectorwise_quant(x.clone(), threshold=bnb_peers.INT8_THRESHOLD)
    assert torch.equal(codes.to(torch.int8), ref_codes), metrics.mismatches(codes.to(torch.int8), ref_codes)
    assert torch.equal(absmax, ref_absmax)
    assert columns.nonzero().flatten().tolist() == ref_columns.tolist() == sorted({3, 10, 20})
    assert absmax[m - 1] == bnb_peers.INT8_THRESHOLD - 2 ** -8  # under the threshold: counted


@pytest.mark.parametrize("m", [1, 5, 33])
def test_llm_int8_product_is_linear8bitlt_output_and_not_x_times_w_hat(m, gen, monkeypatch):
    """The layer's own output (bitsandbytes' CPU path: the same ops, int8_mm_dequant in PyTorch)
    is the float64 product rounded once to float16; x @ W_hat^T is not: LLM.int8 quantizes the
    activations too."""
    pytest.importorskip("bitsandbytes")
    n, k = 48, 96
    w = (0.05 * torch.randn(n, k, generator=gen)).half()
    own = bnb_peers.int8_weights(w, case(bits=8, scheme="symmetric", granularity="channel", group_size=None))
    x = int8_activations_with_outliers(gen, m, k)
    y = bnb_peers.linear8bitlt(SimpleNamespace(x=x, own=own.state))()
    exact = own.product(x)
    assert y.dtype == torch.float16 and exact.dtype == torch.float64 and exact.shape == (m, n)
    assert product_problem(y, exact, k) is None
    assert product_problem(y, x.double() @ own.w_hat.double().t(), k) is not None
    # without outliers the product is the int8 part alone: codes times CB, scaled
    small = x.clamp(-5, 5)
    codes, absmax, columns = bnb_peers.int8_activations(small)
    cb, scb = own.state
    assert not columns.any()
    assert torch.equal(own.product(small), (codes.double() @ cb.double().t()) * absmax.double()[:, None]
                       * scb.double()[None, :] / 127**2)
