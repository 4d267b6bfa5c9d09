"""The launch shortcut (kernels/launching.py) and the once-per-weight checks: what decides whether
a compiled kernel may be reused, and that a weight is checked before its first use. The direct
launch itself runs on a GPU only (tests/gpu/test_kernel_paths.py)."""

import dataclasses
import inspect

import pytest
import torch
import triton
import triton.language as tl

from quantbench.harness.ops.metrics import dequant_close
from quantbench.kernels import QuantSpec, qmatmul, quantize_ref
from quantbench.kernels import launching, references
from quantbench.kernels.checks import next_power_of_2
from quantbench.kernels.spec import QuantizedTensor


def test_a_call_signature_covers_what_triton_specializes_on():
    base = torch.zeros(64, dtype=torch.float16)
    same = torch.zeros(64, dtype=torch.float16)
    assert launching.signature((base, 16, 3)) == launching.signature((same, 16, 3))
    assert launching.signature((base[1:], 16, 3)) != launching.signature((base, 16, 3))  # address not 16-byte aligned
    assert launching.signature((base.float(), 16, 3)) != launching.signature((base, 16, 3))  # dtype
    assert launching.signature((base, 17, 3)) != launching.signature((base, 16, 3))  # any integer


def test_a_launch_hook_sends_every_call_through_triton():
    from triton import knobs
    assert not launching._hooks_set()

    def hook(metadata):
        return None
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        assert launching._hooks_set()
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert not launching._hooks_set()


def test_under_the_interpreter_nothing_is_planned(device):
    from quantbench.kernels import quantized_matmul as qm
    if device.type != "cpu":
        pytest.skip("on the GPU the launchers plan (tests/gpu/test_kernel_paths.py)")
    q = quantize_ref(torch.randn(32, 64), QuantSpec(4, "asymmetric", "group", 32))
    qmatmul(torch.randn(1, 64), q)
    qmatmul(torch.randn(1, 64), q)
    assert not qm._gemv_launch.plans


def test_a_weight_is_checked_on_first_use_and_a_bad_one_every_time(device):
    spec = QuantSpec(4, "asymmetric", "group", 32)
    good = quantize_ref(torch.randn(32, 64, device=device), spec)
    references.check_weight_once(good)
    assert references._checked_weights[id(good)]() is good
    bad = QuantizedTensor(good.codes[:, :-1], good.scales, good.zeros, spec, good.shape)
    for _ in range(2):
        with pytest.raises(ValueError, match="codes must be"):
            qmatmul(torch.randn(1, 64, device=device), bad)
    seen = references._checked_weights.get(id(bad))  # an id may be a freed weight's, its reference dead
    assert seen is None or seen() is not bad


def test_a_prepared_weight_keys_its_format_and_is_dropped_with_the_weight(device):
    """Two weights whose tensors are alike (dtypes, alignment, sizes) but whose formats differ
    must not share a launch plan; and what is kept of a weight (views of its tensors) goes when
    the weight does."""
    import gc

    from quantbench.kernels import prepared
    w = torch.randn(32, 64, device=device)
    asym = quantize_ref(w, QuantSpec(4, "asymmetric", "group", 32))
    sym = QuantizedTensor(asym.codes, asym.scales, None, QuantSpec(4, "symmetric", "group", 32), asym.shape)
    a, s = prepared.prepared(asym), prepared.prepared(sym)
    assert a.gemv_scales().key != s.gemv_scales().key and a.own_key != s.own_key
    assert prepared.prepared(asym) is a  # kept, not made again
    assert a.gemv_constants_for(torch.float16)["FOLD_OFFSET"] and not a.gemv_constants_for(torch.float32)["FOLD_OFFSET"]
    ident = id(sym)
    del s, sym
    gc.collect()
    assert ident not in prepared._prepared


def test_nf4_dq_scales_reach_the_kernels_as_codes(device):
    """nf4_dq's 8-bit scale codes and second level go to the kernels as they are (decoded there):
    nothing decoded is kept beside the weight."""
    from quantbench.kernels import prepared
    q = quantize_ref(torch.randn(32, 128, device=device), QuantSpec(4, "nf4_dq", "group", 32))
    p = prepared.prepared(q)
    assert p.scales is q.scales and p.scales.dtype == torch.uint8 and p.fmt["DQ"]
    assert p.second is q.second.chunk_scales and p.mean is q.second.mean
    nf4 = quantize_ref(torch.randn(32, 128, device=device), QuantSpec(4, "nf4", "group", 32))
    assert not prepared.prepared(nf4).fmt["DQ"]


def test_dequantize_plans_its_launch_once_per_weight_and_output_dtype(device):
    """dequantize keeps its grid, constants and launch key with the weight: made on the first call
    of an output dtype, reused after; each dtype has its own (OUT_MAX, and the key, differ). The
    outputs agree with the reference as dequantize's do (dequant_close: on the GPU, 4-bit codes
    into float16 round once where the reference rounds twice)."""
    from quantbench.kernels import dequantize, dequantize_choice, dequantize_ref, prepared
    q = quantize_ref(torch.randn(32, 128, device=device).half(), QuantSpec(4, "asymmetric", "group", 32))
    assert dequant_close(dequantize(q), dequantize_ref(q)).all()
    p = prepared.prepared(q)
    half = p.dequantize_plans[torch.float16]
    assert dequant_close(dequantize(q, torch.float16), dequantize_ref(q, torch.float16)).all()
    assert p.dequantize_plans[torch.float16] is half and list(p.dequantize_plans) == [torch.float16]
    assert dequant_close(dequantize(q, torch.bfloat16), dequantize_ref(q, torch.bfloat16)).all()
    wide = p.dequantize_plans[torch.bfloat16]
    assert wide.key != half.key and wide.constants["OUT_MAX"] > half.constants["OUT_MAX"]
    for bad in (torch.int8, "float16", [torch.float16]):
        with pytest.raises(TypeError, match="out_dtype must be"):
            dequantize(q, bad)
    assert torch.int8 not in p.dequantize_plans
    # the results' kernel_config of a dequantize row: the plan's tile (K = 128: one tile a row)
    assert dequantize_choice(q, torch.float16) == "BLOCK_N=32 BLOCK_K=128 num_warps=4"


def test_host_next_power_of_2_agrees_with_triton():
    """The launchers' host-side next_power_of_2 (M's bucket, the token kernel's tile, quantize's
    tiling) gives triton.next_power_of_2's answer, without its per-call unwrapping."""
    for n in [*range(1, 300), 4095, 4096, 4097, 8191, 8192, 28672, 1 << 20]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n


def test_a_launcher_reports_its_autotuners_choice():
    """last_choice (a row's kernel_config) describes the config the chain's autotuner ran last:
    None before any launch and where the chain has no autotuner."""
    @triton.jit
    def kernel(x_ptr, BLOCK: tl.constexpr, EVEN: tl.constexpr):
        pass

    configs = [triton.Config({"BLOCK": 16}, num_warps=2, num_stages=1),
               triton.Config({"BLOCK": 64}, num_warps=8, num_stages=3)]
    tuned = triton.autotune(configs, key=[])(triton.heuristics({"EVEN": lambda args: True})(kernel))
    launcher = launching.Launcher(tuned)
    assert launcher.last_choice is None and launcher._autotuner_choice() is None
    tuned.best_config = configs[1]  # as Autotuner.run sets it on every call
    assert launcher._autotuner_choice() == "BLOCK=64 num_warps=8 num_stages=3"
    assert launching.Launcher(kernel)._autotuner_choice() is None


def test_a_plan_takes_the_kernels_defaults_for_the_constants_a_call_leaves_out():
    """A constexpr left to its default (quantize's SCALE_DTYPE outside nf4_dq) is in the plan's
    constants: before, the plan came up short and the launcher fell back to Triton for good."""
    @triton.jit
    def kernel(x_ptr, BLOCK: tl.constexpr, EVEN: tl.constexpr, SCALE: tl.constexpr = 0):
        pass

    tuned = triton.heuristics({"EVEN": lambda args: args["BLOCK"] == 16})(kernel)
    chosen, jit = launching.Launcher(tuned)._constants_chosen(("x",), {"BLOCK": 16})
    assert jit is kernel and chosen == {"BLOCK": 16, "EVEN": True, "SCALE": 0}
    chosen, _ = launching.Launcher(tuned)._constants_chosen(("x",), {"BLOCK": 32, "SCALE": 2})
    assert [chosen[name] for name in jit.arg_names[1:]] == [32, False, 2]  # the caller's value stands


def test_a_planned_launch_runs_the_kept_kernel_and_says_its_choice(monkeypatch):
    """The direct launch's bookkeeping, with the GPU's pieces stood in for (the launch itself runs
    on a GPU only): a planned call signature runs the kept launcher with the kept constants and
    sets last_choice to that plan's, whatever was launched in between."""
    calls = []
    monkeypatch.setattr(launching, "INTERPRETED", False)
    monkeypatch.setattr(launching, "_hooks_set", lambda: False)
    monkeypatch.setattr(launching, "_current_device", lambda: 0)
    monkeypatch.setattr(launching, "_current_stream", lambda device: "stream")
    launcher = launching.Launcher(tuned=None)
    run = lambda *a: calls.append(a)
    # a plan keeps the grid its constants gave (128 // BLOCK programs), worked out when it was made
    head = ("metadata", None, None, None)
    launcher.plans[(0, "small")] = (run, head, "function", (16,), (8, 1, 1), "BLOCK=16 num_warps=2")
    launcher.plans[(0, "large")] = (run, head, "function", (64,), (2, 1, 1), "BLOCK=64 num_warps=8")
    grid = lambda meta: (128 // meta["BLOCK"],)
    launcher(grid, ("x",), {}, key="large")
    launcher(grid, ("x",), {}, key="small")
    assert launcher.last_choice == "BLOCK=16 num_warps=2"
    assert calls == [(2, 1, 1, "stream", "function", "metadata", None, None, None, "x", 64),
                     (8, 1, 1, "stream", "function", "metadata", None, None, None, "x", 16)]


def test_a_planned_launch_passes_the_c_launcher_what_triton_passes_it():
    """launch_function: where a kernel asks for no scratch memory, a planned launch calls Triton's
    C launch function itself, with the arguments that the installed Triton's CudaLauncher.__call__
    (the CompiledKernel's run) passes it; a kernel with scratch keeps run. Checked against that
    __call__ run with a stand-in C function, so a Triton that calls it otherwise fails here."""
    from types import SimpleNamespace

    from triton.backends.nvidia.driver import CudaLauncher

    passed = []
    run = object.__new__(CudaLauncher)  # its attributes set as __init__ sets them, the C module left out
    run.launch = lambda *a: passed.append(a)
    run.num_ctas, run.launch_cooperative_grid, run.launch_pdl = 1, False, True
    run.global_scratch_size = run.profile_scratch_size = 0
    run.global_scratch_align = run.profile_scratch_align = 1
    compiled = SimpleNamespace(run=run, packed_metadata=(4, 1, 0))
    args = ("x", "w", 7, 16, 32)
    call, head = launching.launch_function(compiled)
    if not triton.__version__.startswith(launching._C_LAUNCH_VERSIONS):
        assert call is run  # a Triton not known to call its C function alike keeps run
        return
    assert call is run.launch
    call(8, 2, 1, "stream", "function", *head, *args)
    # what the JIT's launch and the plans before launch_function called
    run(8, 2, 1, "stream", "function", compiled.packed_metadata, None, None, None, *args)
    assert len(passed) == 2 and passed[0] == passed[1]
    run.global_scratch_size = 64
    assert launching.launch_function(compiled) == (run, (compiled.packed_metadata, None, None, None))


def test_the_matmuls_read_group_scales_group_major(device):
    """ScaleArgs: quantize's scale+zero pairs read in place as [groups, N] words (scale in the low
    half, zero in the high one) by the GEMV and, for 4- and 2-bit codes, the GEMMs, nothing copied;
    the same scales held row-major copied once into that layout, the copy's bytes counted;
    symmetric ones copied as [groups, N] scales for both; per-channel weights and nf4_dq's
    8-bit codes read as q holds them, nothing copied."""
    from quantbench.kernels import prepared
    w = torch.randn(48, 128, device=device, dtype=torch.float16)
    asym = quantize_ref(w, QuantSpec(4, "asymmetric", "group", 32))
    row_major = dataclasses.replace(asym, scales=asym.scales.contiguous(), zeros=asym.zeros.contiguous())
    for q, extra in ((asym, 0), (row_major, asym.scales.nbytes + asym.zeros.nbytes)):
        p = prepared.prepared(q)
        pa = p.gemv_scales()
        assert pa.words and pa.scales.shape == (4, 48) and pa.scales.dtype == torch.int32
        assert (pa.stride_row, pa.stride_group) == (1, 48) and pa.extra_bytes == extra
        halves = pa.scales.view(torch.float16).view(4, 48, 2)
        assert torch.equal(halves[..., 0], asym.scales.t()) and torch.equal(halves[..., 1], asym.zeros.t())
        ga = p.gemm_scales()  # the same words, under the GEMMs' own key
        assert ga.scales is pa.scales and (ga.stride_row, ga.stride_group, ga.words) == (1, 48, True)
        assert ga.key != pa.key and ga.describe() == pa.describe()
    assert prepared.prepared(asym).gemv_scales().scales.data_ptr() == asym.scales.data_ptr()  # in place
    assert prepared.prepared(asym).gemv_scales().describe() == ""
    assert prepared.prepared(row_major).gemv_scales().describe() == "scale+zero words group-major (+768 bytes)"
    sym_q = quantize_ref(w, QuantSpec(4, "symmetric", "group", 32))
    sym = prepared.prepared(sym_q).gemv_scales()
    assert not sym.words and sym.zeros is sym.scales and sym.scales.shape == (4, 48) and sym.extra_bytes == 4 * 48 * 2
    assert prepared.prepared(sym_q).gemm_scales().scales is sym.scales  # the GEMMs read the GEMV's copy
    # symmetric scales already group-major (strides (1, N)) are read in place, nothing copied
    sym_gm = dataclasses.replace(sym_q, scales=sym_q.scales.t().contiguous().t())
    in_place = prepared.prepared(sym_gm).gemv_scales()
    assert in_place.extra_bytes == 0 and in_place.scales.data_ptr() == sym_gm.scales.data_ptr()
    assert (in_place.stride_row, in_place.stride_group) == (1, 48) and torch.equal(in_place.scales, sym.scales)
    # 8-bit codes: the GEMMs' 8-bit route reads tiles as dequantize does, from q's own (strided) pairs
    int8 = quantize_ref(w, QuantSpec(8, "asymmetric", "group", 32))
    assert prepared.prepared(int8).gemm_scales().scales is int8.scales and prepared.prepared(int8).gemv_scales().words
    assert prepared.prepared(int8).gemm_scales().stride_group == 2 * 48
    for spec in (QuantSpec(4, "asymmetric", "channel"), QuantSpec(4, "nf4_dq", "group", 32)):
        q = quantize_ref(w, spec)
        for own in (prepared.prepared(q).gemv_scales(), prepared.prepared(q).gemm_scales()):
            assert own.scales is q.scales and own.extra_bytes == 0 and own.stride_group == 1 and own.describe() == ""


def test_quantize_keys_its_launches_on_its_plan_and_the_weights_alignment(monkeypatch, device):
    """quantize works out its tiling, constants and grid once per format, shape, dtype and row
    stride (quantize_tiles.quantize_plan) and keys each launch on that plan and w's alignment, not
    on the signature of its 6-13 arguments. A key stands for a compiled kernel (launching.Launcher),
    so over calls that differ in each of those ways, two launches of one launcher share a key only
    where their arguments' signatures, their constants and their grids agree; and a call like an
    earlier one takes the same plan."""
    from quantbench.kernels import quantization, scale_codes
    from quantbench.kernels.quantize_tiles import quantize_plan

    seen: dict[tuple, tuple] = {}

    class Recording:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, args, constants, key):
            what = (launching.signature(args), tuple(constants.items()), grid(constants))
            assert seen.setdefault((self.name, key), what) == what, (self.name, key)

    for name in ("_quantize_launch", "_minmax_launch", "_qparams_launch"):
        monkeypatch.setattr(quantization, name, Recording(name))
    monkeypatch.setattr(scale_codes, "_double_quantize_launch", lambda grid, args, constants: None)
    specs = [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(4, "symmetric", "group", 32),
             QuantSpec(8, "asymmetric", "channel"), QuantSpec(4, "asymmetric", "tensor"),
             QuantSpec(4, "nf4_dq", "group", 64)]
    for spec in specs:
        for dtype in (torch.float16, torch.float32, torch.bfloat16):
            wide = torch.zeros(48, 320, dtype=dtype, device=device)
            # whole rows, rows of a wider matrix (another row stride), then not 16-byte aligned
            for w in (wide[:32, :256].contiguous(), wide[:32, :256], wide[:32, 8:264], wide[:32, 1:257], wide[:, :128]):
                for _ in range(2):
                    quantization.quantize(w, spec)
    for name in ("_quantize_launch", "_minmax_launch"):
        # as many keys as distinct launches: none shared by two (above), none made twice for one
        # (the per-tensor scale's pass, which reads no part of w, may repeat a launch under two keys)
        mine = {key: what for (launcher, key), what in seen.items() if launcher == name}
        assert mine and len(mine) == len(set(mine.values())), name
    hits = quantize_plan.cache_info().hits
    quantization.quantize(torch.zeros(32, 256, device=device), specs[0])
    assert quantize_plan.cache_info().hits == hits + 1


def test_a_direct_launch_takes_the_weights_tensors_as_their_addresses(monkeypatch, device):
    """qmatmul's GEMV and GEMMs and dequantize pass a direct launch the weight's six tensors as
    ints (ScaleArgs.pointers, PreparedWeight.pointers), the split kernels their workspace's two too
    (split_workspace_addresses, found again when it grows), and Triton's JIT the tensors (tensors()):
    the two agree argument by argument, as many as the kernel takes, the ints being exactly the
    addresses of the weight's tensors in the same places (the launches themselves stood in for:
    the direct launch runs on a GPU only)."""
    from quantbench.kernels import dequantization, dequantize, quantized_matmul as qm
    from quantbench.kernels.dequantization import dequantize_kernel
    from quantbench.kernels.qgemm import qgemm_kernel
    from quantbench.kernels.quantized_matmul import qgemv_kernel

    calls = []

    class Recording:
        def __init__(self, kernel):
            self.kernel = kernel

        def __call__(self, grid, args, constants, key, tensors):
            calls.append((self.kernel, args, tensors()))

    monkeypatch.setattr(qm, "INTERPRETED", False)
    for module, name, kernel in ((qm, "_gemv_launch", qgemv_kernel), (qm, "_split_launch", qgemm_kernel),
                                 (qm, "_gemm_launch", qgemm_kernel), (dequantization, "_dequantize_launch",
                                                                      dequantize_kernel)):
        monkeypatch.setattr(module, name, Recording(kernel))
    w = torch.randn(48, 256, device=device)
    for spec in (QuantSpec(4, "asymmetric", "group", 64), QuantSpec(4, "nf4_dq", "group", 64),
                 QuantSpec(8, "symmetric", "channel")):
        for dtype in (torch.float16, torch.float32):  # scale+zero words read in place; a group-major copy
            q = quantize_ref(w.to(dtype), spec)
            for m in (1, 8, 64, 100):  # GEMV, split-K, split-K, GEMM (unsplit: y stands in for the workspace)
                qm.qmatmul(torch.randn(m, 256, dtype=dtype, device=device), q)
            dequantize(q)
    assert {kernel for kernel, _, _ in calls} == {qgemv_kernel, qgemm_kernel, dequantize_kernel}
    for kernel, args, tensors in calls:
        taken = [p for p in inspect.signature(kernel.fn).parameters.values() if "constexpr" not in str(p.annotation)]
        assert len(args) == len(tensors) == len(taken)
        # the weight's six: after x in the matmuls, first in dequantize
        first = 0 if kernel is dequantize_kernel else 1
        codes = "units_ptr" if kernel is qgemv_kernel else "codes_ptr"
        assert [p.name for p in taken[first:first + 6]] == [codes, "scales_ptr", "zeros_ptr", "table_ptr", "second_ptr",
                                                          "mean_ptr"]
        # and the split kernels' workspace, after y
        split = kernel is qgemv_kernel or (kernel is qgemm_kernel and args[8] is not args[7])
        addresses = {*range(first, first + 6), *((8, 9) if split else ())}
        if split:
            assert [p.name for p in taken[8:10]] == ["partials_ptr", "tickets_ptr"]
        for i, (a, t) in enumerate(zip(args, tensors)):
            if i in addresses:
                assert isinstance(t, torch.Tensor) and a == t.data_ptr(), (kernel, i)
            else:
                assert a is t, (kernel, i)


def test_the_workspace_addresses_follow_the_workspace_when_it_grows(device):
    """A direct launch takes the split-K workspace as two ints; when a larger call grows the
    workspace (a new pair of tensors, the old freed), the ints given after are the new tensors'."""
    from quantbench.kernels import split_k
    before = split_k.split_workspace_addresses(device, 16, 4)
    partials, tickets = split_k.split_workspace(device, 16, 4)
    assert before == (partials.data_ptr(), tickets.data_ptr())
    grown = split_k.split_workspace_addresses(device, partials.numel() + 1, tickets.numel() + 1)
    partials, tickets = split_k.split_workspace(device, 16, 4)  # the grown pair, kept
    assert grown == (partials.data_ptr(), tickets.data_ptr()) and partials.numel() > 1 << 16
