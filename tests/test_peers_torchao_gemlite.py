"""torchao, gemlite and torch._scaled_mm fp8 rowwise as peers (issue 14), where CI runs: no GPU,
neither package. Every new record gives a `skipped` row naming what is missing; the cases a record
does not run are Skipped with the reason, before the library is imported; an own format whose
method quantizes the activations too (OwnWeights.product) is what its row is verified and measured
against, for matmul and matmul_w8a8 alike; the float64 product of fp8 rowwise is the recipe
computed here by hand, and the record runs end to end on the CPU (torch._scaled_mm has a CPU
kernel). With torchao installed, its float8 recipe and int8 weight-only layer are checked too."""

import dataclasses
import importlib
import importlib.util
import math
import sys
import textwrap

import pytest
import torch

from quantbench import Needs, OwnWeights, Role
from quantbench.harness.config import NormalWeights, parse_config
from quantbench.harness.execution.cases import Case
from quantbench.harness.execution.sweep import run_sweep
from quantbench.harness.ops import OPS, Skipped
from quantbench.harness.ops.inputs import InputSource, activations, make_weights
from quantbench.harness.registry import builtin, load_registry, torchao_peers
from quantbench.harness.results import load_run
from quantbench.kernels import dequantize_ref, quantize_ref, unpack_fields
from quantbench.kernels.spec import QuantSpec

NEW_PEERS = {("matmul", "torchao_int4"): "torchao", ("matmul", "torchao_int8"): "torchao",
             ("matmul", "gemlite"): "gemlite", ("matmul_w8a8", "torchao_fp8"): "torchao",
             ("matmul_w8a8", "fp8_rowwise"): None}
E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max
CPU = torch.device("cpu")


def sweep(tmp_path, sweep_keys: dict, plugins: list[str] = (), dtype: str = "float16"):
    cfg = parse_config({"name": "peers", "device": "cpu", "seed": 0, "dtype": dtype, "timing": {"cpu_reps": 1},
                        "plugins": list(plugins), "sweep": sweep_keys})
    df, _ = load_run(run_sweep(cfg, tmp_path / "results", device="cpu", show_progress=False).path)
    return cfg, df


def bound(dtype: torch.dtype, k: int) -> float:
    """The matmul rule (ops/matmul.py product_problem): one rounding to dtype, K float32 additions."""
    return 2 * torch.finfo(dtype).eps + k * torch.finfo(torch.float32).eps


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def case_of(op="matmul", bits=4, scheme="asymmetric", granularity="group", group_size=64, dtype="bfloat16",
            m=4, n=32, k=256) -> Case:
    return Case(op, "x", bits, scheme, granularity, group_size if granularity == "group" else None,
                dtype, m, n, k, None)


def inputs_of(case: Case):
    return OPS[case.op].prepare(case, InputSource(NormalWeights(), 0, "cpu"))


# --- (a) the records, and what a machine without a GPU or the packages gives -------------------

def test_the_new_peers_are_built_in_peer_records():
    registry = load_registry(entry_points=False)
    for (op, name), package in NEW_PEERS.items():
        impl = registry.get(op, name)
        assert impl.role is Role.PEER and impl.origin == "built-in" and impl.description, name
        assert impl.needs.cuda and impl.needs.packages == ((package,) if package else ()), name
        # gemlite runs on the case's own codes; the others quantize their own way
        assert (impl.own_format is None) == (name == "gemlite"), name
    assert registry.get("matmul_w8a8", "fp8_rowwise").needs.min_capability == (8, 9)
    assert registry.get("matmul_w8a8", "torchao_fp8").needs.min_capability == (8, 9)


def test_without_a_gpu_every_new_peer_is_a_skipped_row_naming_it(tmp_path):
    impls = ["torch", *{name for _, name in NEW_PEERS}]
    _, df = sweep(tmp_path, {"op": ["matmul", "matmul_w8a8"], "impl": sorted(impls), "bits": 4,
                             "granularity": "group", "group_size": 64, "M": 2, "N": 32, "K": 128},
                  dtype="bfloat16")
    rows = {(r.op, r.impl): (r.status, r.message) for r in df.itertuples()}
    for key in NEW_PEERS:
        assert rows[key] == ("skipped", f"{key[1]} needs a CUDA GPU"), key
    assert rows["matmul", "torch"][0] == rows["matmul_w8a8", "torch"][0] == "ok"


@pytest.mark.parametrize("package", sorted({p for p in NEW_PEERS.values() if p}))
def test_a_missing_package_is_named(package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    registry = load_registry(entry_points=False)
    for (op, name), needed in NEW_PEERS.items():
        if needed == package:
            assert registry.get(op, name).needs.missing(torch.device("cuda")) == \
                f"needs the Python package {package!r}, which is not installed"


# --- (b) the cases a record does not run: Skipped, with the reason, before any import ----------

OWN_FORMAT_SKIPS = [
    ("matmul", "torchao_int4", case_of(bits=8), "4-bit asymmetric per-group cases only"),
    ("matmul", "torchao_int4", case_of(scheme="symmetric"), "not 4-bit symmetric per group"),
    ("matmul", "torchao_int4", case_of(granularity="channel"), "not 4-bit asymmetric per channel"),
    ("matmul", "torchao_int4", case_of(dtype="float16"), "takes bfloat16 weights and activations, not float16"),
    ("matmul", "torchao_int8", case_of(bits=4, scheme="symmetric", granularity="channel"), "not 4-bit symmetric"),
    ("matmul", "torchao_int8", case_of(bits=8, granularity="channel"), "not 8-bit asymmetric per channel"),
    ("matmul", "torchao_int8", case_of(bits=8, scheme="symmetric"), "not 8-bit symmetric per group"),
    ("matmul_w8a8", "torchao_fp8", case_of("matmul_w8a8", 8, "symmetric", "channel", dtype="float16"),
     "bfloat16 weights only"),
    ("matmul_w8a8", "torchao_fp8", case_of("matmul_w8a8", 8, "symmetric", "channel", n=24), "N=24, K=256"),
    ("matmul_w8a8", "fp8_rowwise", case_of("matmul_w8a8", 8, "symmetric", "channel", k=200),
     "K and N multiples of 16, got N=32, K=200"),
]


@pytest.mark.parametrize("op,name,case,reason", OWN_FORMAT_SKIPS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_case_an_own_format_does_not_run_is_skipped_with_the_reason(op, name, case, reason):
    impl = load_registry(entry_points=False).get(op, name)
    w = torch.randn(case.N, case.K).to(getattr(torch, case.dtype))
    with pytest.raises(Skipped, match=reason):
        impl.own_format(w, case)


GEMLITE_SKIPS = [
    (case_of(granularity="tensor"), "not one per tensor"),
    (case_of(dtype="float32"), "float16 and bfloat16 activations, not float32"),
    (case_of(granularity="channel", k=48), "K to be a multiple of 32, got K=48"),
]


@pytest.mark.parametrize("case,reason", GEMLITE_SKIPS, ids=[r for _, r in GEMLITE_SKIPS])
def test_a_case_gemlite_does_not_run_is_skipped_with_the_reason(case, reason):
    impl = load_registry(entry_points=False).get("matmul", "gemlite")
    with pytest.raises(Skipped, match=reason):
        impl.factory(inputs_of(case))


@pytest.mark.parametrize("scheme,bits,granularity",
                         [("nf4", 4, "group"), ("nf4_dq", 4, "group"), ("fp8", 8, "channel")])
def test_gemlite_skips_the_codebook_schemes(scheme, bits, granularity):
    impl = load_registry(entry_points=False).get("matmul", "gemlite")
    inp = inputs_of(case_of(bits=bits, scheme=scheme, granularity=granularity, dtype="float16"))
    with pytest.raises(Skipped, match=f"not the {scheme} codebook"):
        impl.factory(inp)


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(2, "asymmetric", "channel"),
                                  QuantSpec(8, "symmetric", "group", 64), QuantSpec(4, "symmetric", "channel")])
def test_the_case_format_is_gemlites_fma_and_shift_forms_exactly(spec, gen):
    """What gemlite is fed (gemlite_peers.py): asymmetric w_hat = field * scale + zero (its fma
    form with zeros = the case's zero), symmetric (field - 2^(bits-1)) * scale (its integer shift)."""
    w = torch.randn(24, 128, generator=gen).to(torch.float16)
    q = quantize_ref(w, spec)
    fields = unpack_fields(q.codes, spec.bits, 128).float()
    per = spec.group_size or 128
    scale = q.scales.float().repeat_interleave(per, dim=1)
    if spec.scheme == "asymmetric":
        by_gemlite = fields * scale + q.zeros.float().repeat_interleave(per, dim=1)
    else:
        by_gemlite = (fields - spec.offset) * scale
    assert torch.equal(by_gemlite, dequantize_ref(q, torch.float32))


def test_tinygemms_w_hat_is_read_back_column_by_column(monkeypatch, gen):
    """int4_w_hat reads W_hat through the layer with rows of the identity, in blocks: on a dense
    bfloat16 Linear it gives its weight back exactly, across block edges."""
    monkeypatch.setattr(torchao_peers, "IDENTITY_ROWS", 16)
    w = torch.randn(24, 40, generator=gen).to(torch.bfloat16)
    module = torch.nn.Linear(40, 24, bias=False, dtype=torch.bfloat16)
    module.weight = torch.nn.Parameter(w, requires_grad=False)
    w_hat = torchao_peers.int4_w_hat(module, 40)
    assert w_hat.dtype == torch.float32 and torch.equal(w_hat, w.float())


# --- (c) an own format whose method quantizes the activations too ------------------------------

FAKE_FP8 = textwrap.dedent("""
    import torch
    from quantbench import Impl, OwnWeights, Role

    def rows(t):  # fp8 rowwise in pure torch: absmax / 448 per row, e4m3 codes
        t = t.float()
        s = t.abs().amax(dim=1) / 448
        return (t / s[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn), s

    def fmt(w, case):
        wq, sw = rows(w)
        w_hat = wq.double() * sw.double()[:, None]  # exact (4 + 24 significant bits)
        def product(x):
            xq, sx = rows(x)
            return (xq.double() * sx.double()[:, None]) @ w_hat.t()
        return OwnWeights(state=w_hat.float(), w_hat=w_hat, weight_bytes=w.numel() + 4 * w.shape[0], product=product)

    def right(inp):
        x, w_hat = inp.x, inp.own
        def run():
            xq, sx = rows(x)
            return ((xq.float() * sx[:, None]) @ w_hat.t()).to(x.dtype)
        return run

    def forgets_x(inp):  # the weights in fp8, the activations left as they are
        x, w_hat = inp.x, inp.own
        return lambda: (x.float() @ w_hat.t()).to(x.dtype)

    def quantbench_impls():
        return [Impl(op=op, name=name, role=Role.PEER, factory=f, own_format=fmt)
                for op in ("matmul", "matmul_w8a8")
                for name, f in (("fake_fp8", right), ("fake_fp8_forgets_x", forgets_x))]
""")
M, N, K = 4, 32, 64


@pytest.fixture
def fake_fp8_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "qb_plugin_fake_fp8.py").write_text(FAKE_FP8)
    importlib.invalidate_caches()
    yield sweep(tmp_path, {"op": ["matmul", "matmul_w8a8"], "impl": ["torch", "fake_fp8", "fake_fp8_forgets_x"],
                           "bits": 8, "scheme": "symmetric", "granularity": "channel", "M": M, "N": N, "K": K},
                plugins=["qb_plugin_fake_fp8"])
    sys.modules.pop("qb_plugin_fake_fp8", None)


@pytest.mark.parametrize("op", ["matmul", "matmul_w8a8"])
def test_an_own_product_is_what_the_row_is_verified_and_measured_against(fake_fp8_run, op):
    cfg, df = fake_fp8_run
    rows = df[df["op"] == op].set_index("impl")
    right, wrong = rows.loc["fake_fp8"], rows.loc["fake_fp8_forgets_x"]
    assert right["status"] == "ok", right["message"]
    assert right["kernel_rel_err"] <= bound(torch.float16, K)
    # leaving x unquantized is off by the activations' fp8 error: an error row, and the sweep goes on
    assert wrong["status"] == "error" and "against the float64 product exceeds" in wrong["message"]
    assert wrong["kernel_rel_err"] > bound(torch.float16, K)
    assert rows.loc["torch", "status"] == "ok"
    assert right["weight_bytes"] == N * K + 4 * N
    # the method's error is the product's (x quantized too) against the exact one, not W_hat's alone
    w = make_weights(cfg.weights, cfg.seed, N, K, cfg.dtype, "cpu").float()
    x = activations(cfg.seed, M, K, cfg.dtype, "cpu").float()
    sx, sw = x.abs().amax(dim=1) / E4M3_MAX, w.abs().amax(dim=1) / E4M3_MAX
    x_hat = (x / sx[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).double() * sx.double()[:, None]
    w_hat = (w / sw[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).double() * sw.double()[:, None]
    exact = x.double() @ w.double().t()
    assert right["method_rel_err"] == pytest.approx(rel(x_hat @ w_hat.t(), exact), rel=1e-9)
    assert right["method_rel_err"] != pytest.approx(rel(x.double() @ w_hat.t(), exact), rel=1e-2)


def own_case(op: str, dtype: str = "float32") -> Case:
    return case_of(op, 8, "symmetric", "channel", dtype=dtype, m=3, n=16, k=256)


@pytest.mark.parametrize("op", ["matmul", "matmul_w8a8"])
def test_with_own_takes_the_product_and_checks_what_it_returns(op):
    inp = inputs_of(own_case(op))
    y = inp.x.double() @ inp.w.double().t() * 1.5  # not x @ W_hat^T
    own = OwnWeights(state="prepared", w_hat=inp.w.float(), weight_bytes=1, product=lambda x: y)
    got = OPS[op].with_own(inp, own)
    assert got.own == "prepared" and torch.equal(got.y_quant, y)
    for product, error, message in [(lambda x: y.float(), TypeError, "must return float64"),
                                    (lambda x: y[:, :-1], ValueError, r"product returned shape \[3, 15\]")]:
        with pytest.raises(error, match=message):
            OPS[op].with_own(inp, dataclasses.replace(own, product=product))
    no_product = OPS[op].with_own(inp, dataclasses.replace(own, product=None))
    assert torch.equal(no_product.y_quant, inp.x.double() @ inp.w.float().double().t())


def test_w8a8_checks_an_own_format_by_the_matmul_rule_and_its_own_int8_exactly():
    """Float sums (an own format) may be off by K float32 roundings; the int8 method's integer sums
    may not: an output off by a relative error between the two bounds passes only the first."""
    op = OPS["matmul_w8a8"]
    inp = inputs_of(case_of("matmul_w8a8", 8, "symmetric", "channel", dtype="float32", m=3, n=64, k=64))
    w = inp.w
    own = OwnWeights(state=None, w_hat=w, weight_bytes=1, product=lambda x: x.double() @ w.double().t())
    inp = op.with_own(inp, own)
    assert inp.own_format and inp.own is None  # a format with no state is still one
    eps32 = torch.finfo(torch.float32).eps
    between = (2 * eps32 + bound(torch.float32, 64)) / 2
    out = (inp.y_quant * (1 + between)).float()
    assert op.verify(out, None, inp) is None
    assert "against the exact W8A8 result exceeds" in op.verify(out, None, dataclasses.replace(inp, own_format=False))


# --- (d) fp8 rowwise: the float64 product, and the record on the CPU ----------------------------

def by_hand_fp8_rows(t: torch.Tensor) -> torch.Tensor:
    """The recipe, row by row: scale = max|row| / 448 in float32 (1 for a zero row), codes the e4m3
    of row / scale, clamped; returns the float64 dequantized rows."""
    out = []
    for row in t.float():
        amax = row.abs().max()
        scale = amax / 448 if amax > 0 else torch.tensor(1.0)
        codes = (row / scale).clamp(-448, 448).to(E4M3)
        assert amax == 0 or codes.float().abs().max() == E4M3_MAX  # the row's largest value is +-448
        out.append(codes.double() * scale.double())
    return torch.stack(out)


def test_fp8_rowwise_product_is_the_recipe_by_hand(gen):
    impl = load_registry(entry_points=False).get("matmul_w8a8", "fp8_rowwise")
    if builtin.scaled_mm_refusal(torch.float16, CPU):
        pytest.skip(f"this torch's CPU _scaled_mm: {builtin.scaled_mm_refusal(torch.float16, CPU)}")
    case = case_of("matmul_w8a8", 8, "symmetric", "channel", dtype="float16", m=5, n=48, k=64)
    w = (torch.randn(48, 64, generator=gen) * 2).to(torch.float16)
    x = torch.randn(5, 64, generator=gen).to(torch.float16)
    x[2] = 0  # an all-zero token: scale 1, an output row of zeros (no NaN)
    own = impl.own_format(w, case)
    y = own.product(x)
    hand = by_hand_fp8_rows(x) @ by_hand_fp8_rows(w).t()
    assert y.dtype == torch.float64 and rel(y, hand) <= 4 * 64 * torch.finfo(torch.float64).eps
    assert torch.equal(y[2], torch.zeros(48, dtype=torch.float64))
    assert torch.equal(own.w_hat.double(), by_hand_fp8_rows(w)) and own.weight_bytes == 48 * 64 + 4 * 48
    # quantizing x is part of the method: without it the product would fail the float16 check
    assert rel(x.double() @ own.w_hat.double().t(), y) > bound(torch.float16, 64)


def test_fp8_rowwise_runs_end_to_end_on_the_cpu(tmp_path, monkeypatch):
    for dtype in (torch.float16, torch.bfloat16):
        if builtin.scaled_mm_refusal(dtype, CPU):
            pytest.skip(f"this torch's CPU _scaled_mm: {builtin.scaled_mm_refusal(dtype, CPU)}")
    monkeypatch.setattr(builtin, "BUILTIN_IMPLS", [dataclasses.replace(i, needs=Needs()) if i.name == "fp8_rowwise"
                                                   else i for i in builtin.BUILTIN_IMPLS])
    cfg, df = sweep(tmp_path, {"op": "matmul_w8a8", "impl": ["torch", "fp8_rowwise"], "dtype": ["float16", "bfloat16"],
                               "M": [3], "N": [N], "K": [K]})
    for dtype, rows in df.groupby("dtype"):
        row = rows.set_index("impl").loc["fp8_rowwise"]
        assert row["status"] == "ok", row["message"]
        assert row["kernel_rel_err"] <= bound(getattr(torch, dtype), K)
        assert row["weight_bytes"] == N * K + 4 * N
        assert row["bits_per_weight"] == pytest.approx(8 * (N * K + 4 * N) / (N * K))
        w = make_weights(cfg.weights, cfg.seed, N, K, dtype, "cpu")
        x = activations(cfg.seed, 3, K, dtype, "cpu")
        exact = x.double() @ w.double().t()
        by_hand = by_hand_fp8_rows(x) @ by_hand_fp8_rows(w).t()
        assert row["method_rel_err"] == pytest.approx(rel(by_hand, exact), rel=1e-9)
        assert math.isfinite(row["ms"]) and rows.set_index("impl").loc["torch", "status"] == "ok"


# --- with torchao installed (not in CI): its recipe, and its int8 layer on the CPU -------------

def test_torchao_fp8_rows_are_torchaos_own_quantization(gen):
    pytest.importorskip("torchao")
    from torchao.quantization import Float8Tensor, PerRow
    from torchao.quantization.quantize_.common import KernelPreference
    t = (torch.randn(33, 160, generator=gen) * 3).to(torch.bfloat16)
    t[0] = 0  # torchao has no floor: scale 0, NaN codes, reproduced bit for bit
    ref = Float8Tensor.from_hp(t, granularity=PerRow(), kernel_preference=KernelPreference.TORCH)
    codes, scales = torchao_peers.torchao_fp8_rows(t)
    assert torch.equal(codes.view(torch.uint8), ref.qdata.view(torch.uint8)) and torch.equal(scales, ref.scale)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_torchao_int8_is_verified_on_its_own_w_hat(dtype):
    pytest.importorskip("torchao")
    case = own_case("matmul", dtype)
    op, inp = OPS["matmul"], inputs_of(case)
    own = torchao_peers.int8_weights(inp.w, case)
    inp = op.with_own(inp, own)
    assert op.verify(torchao_peers.linear(inp)(), None, inp) is None
    assert own.weight_bytes == case.N * case.K + 4 * case.N + case.N  # codes, float32 scales, int8 zero points
