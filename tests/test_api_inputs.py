"""The kernels' Python API against inputs the launchers must refuse, or take and get right: each
case found by fuzzing the API (session 23), where a launcher answered wrongly without a word or
failed deep inside with an error that named nothing the caller passed."""

import dataclasses

import pytest
import torch

from quantbench.kernels import (QuantSpec, dequantize, dequantize_ref, pack_weights, qmatmul, qmatmul_ref, quantize,
                                quantize_ref, quantize_tokens_ref, w8a8_matmul, w8a8_matmul_ref)
from quantbench.kernels.spec import QuantizedTensor, ScaleQuant
from quantbench.harness.ops.metrics import dequant_close
from test_qmatmul import rel_err, tolerance


def test_a_spec_takes_integers_only():
    """8.0 == 8: a float passed the value checks and failed deep in a launcher (a shift, a shape)."""
    with pytest.raises(TypeError, match="bits must be an int"):
        QuantSpec(8.0, "symmetric", "channel")
    with pytest.raises(TypeError, match="group_size must be an int"):
        QuantSpec(4, "asymmetric", "group", 32.0)


def test_what_is_not_a_weight_or_a_spec_is_named(device):
    w = torch.randn(8, 64, device=device)
    x = torch.randn(1, 64, device=device)
    for call in (lambda: qmatmul(x, w), lambda: qmatmul_ref(x, w), lambda: dequantize(w), lambda: dequantize_ref(w),
                 lambda: pack_weights(w), lambda: qmatmul(x, None)):
        with pytest.raises(TypeError, match="q must be a QuantizedTensor"):
            call()
    for spec in (None, (8, "symmetric", "channel")):
        for launcher in (quantize, quantize_ref):
            with pytest.raises(TypeError, match="spec must be a QuantSpec"):
                launcher(w, spec)
    q = quantize_ref(w, QuantSpec(8, "symmetric", "channel"))
    with pytest.raises(TypeError, match="spec must be a QuantSpec"):
        dequantize(dataclasses.replace(q, spec=None))


def test_a_hand_built_weight_must_fit_its_format(device):
    """A K that the group size does not divide left a group short: the kernels answered, the
    reference failed; a shape of floats failed in a shift."""
    spec = QuantSpec(4, "asymmetric", "group", 32)
    good = quantize_ref(torch.randn(4, 96, device=device), spec)
    short = QuantizedTensor(good.codes[:, :50], good.scales[:, :3].contiguous(), good.zeros[:, :3].contiguous(),
                            spec, (4, 100))
    for call in (lambda: dequantize(short), lambda: qmatmul(torch.randn(1, 100, device=device), short),
                 lambda: dequantize_ref(short)):
        with pytest.raises(ValueError, match="group_size 32 must divide K = 100"):
            call()
    with pytest.raises(ValueError, match=r"q.shape must be the weight's \(N, K\)"):
        dequantize(dataclasses.replace(good, shape=(4.0, 96.0)))


def test_nf4_dq_second_level_must_be_contiguous_float32(device):
    q = quantize_ref(torch.randn(8, 4096, device=device), QuantSpec(4, "nf4_dq", "group", 64))  # 512 scales
    chunks = q.second.chunk_scales
    assert chunks.numel() > 1  # a single chunk scale has no stride to get wrong
    strided = torch.stack([chunks, chunks], dim=1)[:, 0]  # the same values at stride 2
    for second, match in ((ScaleQuant(strided, q.second.mean, q.second.dtype), "chunk_scales must be contiguous"),
                          (ScaleQuant(chunks.double(), q.second.mean, q.second.dtype), "chunk_scales must be"),
                          (ScaleQuant(chunks, q.second.mean.double(), q.second.dtype), "mean must be"),
                          (ScaleQuant(chunks, q.second.mean, torch.float64), "dtype .* must be one of")):
        bad = dataclasses.replace(q, second=second)
        for call in (lambda: dequantize(bad), lambda: qmatmul(torch.randn(1, 4096, device=device), bad)):
            with pytest.raises(ValueError, match=match):
                call()


def test_w8a8_scales_must_be_contiguous_and_the_references_check_their_inputs(device):
    """The int8 GEMM reads w_scales at unit stride: strided scales gave a wrong product silently."""
    w_int8, w_scales = pack_weights(quantize_ref(torch.randn(16, 64, device=device),
                                                 QuantSpec(8, "symmetric", "channel")))
    x = torch.randn(4, 64, device=device)
    strided = torch.stack([w_scales, w_scales], dim=1)[:, 0]
    for matmul in (w8a8_matmul, w8a8_matmul_ref):
        with pytest.raises(ValueError, match="w_scales must be contiguous"):
            matmul(x, w_int8, strided)
        with pytest.raises(ValueError, match="x must be .* K = 64"):
            matmul(torch.randn(4, 32, device=device), w_int8, w_scales)
    with pytest.raises(ValueError, match="x must be 2-D"):
        quantize_tokens_ref(torch.randn(64, device=device))
    with pytest.raises(TypeError, match="x must have dtype"):
        quantize_tokens_ref(torch.zeros(2, 64, dtype=torch.int32, device=device))


def test_a_single_column_takes_any_stride(device):
    """A [N, 1] tensor is contiguous whatever its column stride (torch.randn(1, 6).t()); refusing
    it with "call .contiguous() first" asked for what .contiguous() does not change."""
    w = torch.randn(1, 6, device=device).t()
    assert w.is_contiguous() and w.stride(1) != 1
    spec = QuantSpec(8, "asymmetric", "channel")
    q, ref = quantize(w, spec), quantize_ref(w, spec)
    assert torch.equal(q.codes, ref.codes) and torch.equal(q.scales, ref.scales)
    x = torch.randn(1, 3, device=device).t()  # M = 3, K = 1
    exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
    assert rel_err(qmatmul(x, q), exact) <= tolerance(torch.float32, 1)


@pytest.mark.parametrize("spec, dtype", [(QuantSpec(4, "symmetric", "group", 32), torch.float16),
                                         (QuantSpec(4, "asymmetric", "group", 32), torch.float32)], ids=str)
def test_scales_written_in_place_after_a_matmul_are_read(spec, dtype, device):
    """The matmuls read a group-major copy of these scales (prepared.group_major_copy); a weight
    loaded in place after a first call (load_state_dict copies into the tensors it has) was
    multiplied with the old scales. The copy is made again when its source was written."""
    gen = torch.Generator().manual_seed(3)
    q = quantize_ref(torch.randn(8, 64, generator=gen).to(dtype).to(device), spec)
    x = torch.randn(1, 64, generator=gen).to(dtype).to(device)
    qmatmul(x, q)
    new = quantize_ref((torch.randn(8, 64, generator=gen) * 10).to(dtype).to(device), spec)
    q.codes.copy_(new.codes)
    q.scales.copy_(new.scales)
    if q.zeros is not None:
        q.zeros.copy_(new.zeros)
    for m in (1, 16):
        xm = x.repeat(m, 1)
        exact = xm.double() @ dequantize_ref(q, torch.float32).double().t()
        assert rel_err(qmatmul(xm, q), exact) <= tolerance(dtype, 64), m


def test_a_hand_built_shape_may_be_a_list_but_of_python_ints(device):
    import numpy as np
    q = quantize_ref(torch.randn(4, 64, device=device), QuantSpec(8, "symmetric", "channel"))
    assert torch.equal(dequantize(dataclasses.replace(q, shape=[4, 64])), dequantize(q))
    with pytest.raises(ValueError, match="two positive Python ints"):  # Triton takes no numpy int
        dequantize(dataclasses.replace(q, shape=(np.int64(4), np.int64(64))))


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(8, "symmetric", "channel"),
                                  QuantSpec(4, "nf4", "group", 32)], ids=str)
def test_dequantize_clamps_only_a_weight_that_can_pass_the_range(spec, device):
    """dequantize leaves its clamp out where no code of the weight can pass the output dtype's
    range (PreparedWeight.fits), and keeps it where one can: two weights alike in their tensors
    then differ in the kernel's constants and launch key. Scales written in place past the range
    after a first call bring the clamp back; without it these would come out inf."""
    from quantbench.kernels import prepared
    gen = torch.Generator().manual_seed(5)
    small = quantize_ref(torch.randn(8, 64, generator=gen).to(device), spec)
    large = quantize_ref((torch.randn(8, 64, generator=gen) * 1e5).to(device), spec)
    for q, saturates in ((small, False), (large, True)):
        got = dequantize(q, torch.float16)
        assert got.isfinite().all() and dequant_close(got, dequantize_ref(q, torch.float16)).all()
        assert prepared.prepared(q).dequantize_plans[torch.float16].constants["SATURATE"] is saturates
    assert (prepared.prepared(small).dequantize_plans[torch.float16].key
            != prepared.prepared(large).dequantize_plans[torch.float16].key)
    small.scales.mul_(1e5)  # in place, as a state dict is loaded
    assert dequantize(small, torch.float16).isfinite().all()
    assert prepared.prepared(small).dequantize_plans[torch.float16].constants["SATURATE"] is True


def test_nf4_dq_second_level_written_in_place_is_seen(device):
    """nf4_dq's chunk scales and mean decode every scale: written in place after a first call
    (past float16's range here), dequantize clamps again and qmatmul leaves its fused kernels."""
    from quantbench.kernels import qmatmul_route
    gen = torch.Generator().manual_seed(6)
    q = quantize_ref(torch.randn(8, 64, generator=gen).to(device), QuantSpec(4, "nf4_dq", "group", 64))
    x = torch.full((1, 64), 0.01, dtype=torch.float16, device=device)
    assert qmatmul_route(x, q) == "gemv" and dequantize(q, torch.float16).isfinite().all()
    q.second.mean.add_(1e6)  # every decoded scale ~1e6
    assert qmatmul_route(x, q) == "dequantize+cublas"
    assert dequantize(q, torch.float16).isfinite().all()
    assert dequant_close(dequantize(q, torch.float16), dequantize_ref(q, torch.float16)).all()


def test_float32_activations_with_a_weight_past_float32s_range(device):
    """A weight built by hand with scales near float32's largest: the reference saturates W_hat at
    it, and so does qmatmul, on dequantize+cublas, where the fused kernels gave inf."""
    from quantbench.kernels import qmatmul_route
    from quantbench.kernels.packing import pack_fields
    codes = pack_fields(torch.full((32, 64), 15, dtype=torch.uint8), 4).to(device)  # symmetric int4: code 7
    q = QuantizedTensor(codes, torch.full((32, 1), 1e38, device=device), None, QuantSpec(4, "symmetric", "channel"),
                        (32, 64))
    x = torch.full((1, 64), 1e-30, device=device)
    assert qmatmul_route(x, q) == "dequantize+cublas"
    got, want = qmatmul(x, q), qmatmul_ref(x, q)
    assert got.isfinite().all() and torch.allclose(got, want, rtol=1e-5)


def test_qmatmul_route_checks_x_as_qmatmul_does(device):
    """qmatmul_route (and qmatmul_config, through it) answered for x that qmatmul refuses: a 1-D
    x, a wrong K, an int32 x (a raw torch.finfo error)."""
    from quantbench.kernels import qmatmul_config, qmatmul_route
    q = quantize_ref(torch.randn(8, 64, device=device), QuantSpec(4, "symmetric", "channel"))
    for bad, error, match in ((torch.zeros(64, device=device), ValueError, "x must be 2-D"),
                              (torch.zeros(1, 32, device=device), ValueError, "K = 64"),
                              (torch.zeros(1, 64, dtype=torch.int32, device=device), TypeError, "x must have dtype")):
        for ask in (qmatmul_route, qmatmul_config):
            with pytest.raises(error, match=match):
                ask(bad, q)


def test_a_weight_made_under_inference_mode_is_always_clamped_by_dequantize(device):
    """Tensors made under torch.inference_mode keep no version counters, so a write in place past
    the range could not be seen: dequantize keeps its clamp for such a weight."""
    from quantbench.kernels import prepared
    with torch.inference_mode():
        q = quantize_ref(torch.randn(8, 64, device=device).half(), QuantSpec(4, "symmetric", "channel"))
        dequantize(q, torch.float16)
        assert prepared.prepared(q).dequantize_plans[torch.float16].constants["SATURATE"] is True
        q.scales.fill_(30000.0)  # codes up to 7: 210000, past 65504
        assert dequantize(q, torch.float16).isfinite().all()


@pytest.mark.parametrize("spec", [QuantSpec(4, "asymmetric", "group", 32), QuantSpec(8, "symmetric", "channel")],
                         ids=str)
def test_a_part_replaced_after_a_matmul_is_read_or_refused(spec, device):
    """Tensor.set_ (and resize_) give a weight's tensor other storage, or another shape, in place,
    which the frozen QuantizedTensor cannot stop: the weight's prepared state (the codes' int32 view,
    the addresses a direct launch passes, the checks made once) was kept, so the GEMV multiplied
    the old codes, and scales of a wrong shape were read past their end. Now a replaced part is
    prepared anew, and checked again."""
    gen = torch.Generator().manual_seed(11)
    q = quantize_ref(torch.randn(16, 64, generator=gen).half().to(device), spec)
    x = torch.randn(1, 64, generator=gen).half().to(device)
    qmatmul(x, q)
    dequantize(q)
    new = quantize_ref(torch.randn(16, 64, generator=gen).half().to(device), spec)
    q.codes.set_(new.codes.clone())
    for m in (1, 5):
        xm = x.repeat(m, 1)
        assert rel_err(qmatmul(xm, q), qmatmul_ref(xm, q).double()) <= tolerance(torch.float16, 64), m
    assert dequant_close(dequantize(q), dequantize_ref(q)).all()
    q.scales.set_(torch.ones(1, 1, dtype=q.scales.dtype, device=device))
    for call in (lambda: qmatmul(x, q), lambda: dequantize(q), lambda: qmatmul_ref(x, q)):
        with pytest.raises(ValueError, match="scales must be"):
            call()


def test_a_weight_that_requires_grad_quantizes_as_its_values(device):
    """An nn.Parameter is how a weight usually arrives: quantize_ref of a float16 one, and qmatmul
    of a weight whose float16 scales and zeros are Parameters (copied into scale+zero pairs for
    the kernels), failed with autograd's in-place error."""
    spec = QuantSpec(4, "asymmetric", "group", 32)
    w = torch.nn.Parameter(torch.randn(8, 64, dtype=torch.float16, device=device))
    q = quantize_ref(w, spec)
    ref = quantize_ref(w.detach(), spec)
    assert torch.equal(q.codes, ref.codes) and torch.equal(q.scales, ref.scales) and torch.equal(q.zeros, ref.zeros)
    hand = QuantizedTensor(ref.codes, torch.nn.Parameter(ref.scales.contiguous()),
                           torch.nn.Parameter(ref.zeros.contiguous()), spec, ref.shape)
    x = torch.randn(1, 64, dtype=torch.float16, device=device)
    assert rel_err(qmatmul(x, hand), qmatmul_ref(x, ref).double()) <= tolerance(torch.float16, 64)
