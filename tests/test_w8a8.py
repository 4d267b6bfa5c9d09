"""W8A8: per-token activation quantization (exact codes) and the int8 GEMM (exact integer sums)."""

import gc
import weakref

import pytest
import torch

from quantbench.kernels import w8a8 as w8a8_module
from quantbench.kernels import (QuantSpec, pack_weights, quantize_ref, quantize_tokens, quantize_tokens_ref,
                                w8a8_matmul, w8a8_matmul_ref)

W_SPEC = QuantSpec(8, "symmetric", "channel")


@pytest.mark.parametrize("m,k", [(1, 7), (5, 1500), (33, 130)])
def test_token_codes_equal_reference(m, k, gen, device):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = (torch.randn(m, k, generator=gen) * 3).to(dtype).to(device)
        x[0] = 0.0  # an all-zero token: scale 1, codes 0
        xq, sx = quantize_tokens(x)
        xq_ref, sx_ref = quantize_tokens_ref(x)
        assert torch.equal(sx, sx_ref) and torch.equal(xq, xq_ref)
        assert sx[0].item() == 1.0 and (xq[0] == 0).all()


@pytest.mark.parametrize("m", [1, 17, 40])
def test_int8_gemm_matches_reference(m, gen, device):
    n, k = 37, 200
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        w = torch.randn(n, k, generator=gen).to(dtype).to(device)
        x = torch.randn(m, k, generator=gen).to(dtype).to(device)
        w_int8, w_scales = pack_weights(quantize_ref(w, W_SPEC))
        y, ref = w8a8_matmul(x, w_int8, w_scales), w8a8_matmul_ref(x, w_int8, w_scales)
        # integer sums are exact; what remains is the float32 epilogue and one rounding to dtype
        bound = 2 * torch.finfo(dtype).eps
        rel = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
        assert y.dtype == dtype and rel <= bound, f"{dtype}: {rel:.2e} > {bound:.2e}"


def test_pack_weights_refuses_other_formats(device):
    q = quantize_ref(torch.randn(4, 32).to(device), QuantSpec(8, "asymmetric", "channel"))
    with pytest.raises(ValueError, match="W8A8 takes a symmetric 8-bit per-channel weight"):
        pack_weights(q)


def test_a_weight_is_checked_on_first_use_and_a_wrong_one_on_every_call(gen, device):
    """The weight pair's checks run once per pair (kernels/w8a8.checked_weight): a wrong weight is
    refused on every call, a pair checked once may be reused, and another scales tensor beside the
    same codes is checked again."""
    n, k = 8, 64
    x = torch.randn(2, k, generator=gen).to(device)
    w_int8, w_scales = pack_weights(quantize_ref(torch.randn(n, k, generator=gen).to(device), W_SPEC))
    for _ in range(2):
        with pytest.raises(TypeError, match="w_int8 must have dtype in"):
            w8a8_matmul(x, w_int8.to(torch.int16), w_scales)
        with pytest.raises(ValueError, match=r"w_scales must be float32 \[8\]"):
            w8a8_matmul(x, w_int8, w_scales[:4])
    first = w8a8_matmul(x, w_int8, w_scales)
    assert torch.equal(w8a8_matmul(x, w_int8, w_scales), first)
    with pytest.raises(ValueError, match=r"w_scales must be float32 \[8\]"):
        w8a8_matmul(x, w_int8, w_scales.double())
    with pytest.raises(TypeError, match="w_scales must be a torch.Tensor"):
        w8a8_matmul(x, w_int8, [1.0] * n)


def test_a_checked_weight_is_not_kept_alive(gen, device):
    k = 32
    x = torch.randn(1, k, generator=gen).to(device)
    w_int8, w_scales = pack_weights(quantize_ref(torch.randn(4, k, generator=gen).to(device), W_SPEC))
    w8a8_matmul(x, w_int8, w_scales)
    alive = weakref.ref(w_int8)
    del w_int8
    gc.collect()
    assert alive() is None


def test_codes_met_with_new_scales_each_call_keep_one_entry(gen, device):
    """Scales made afresh for every call (a .clone(), a cast) are checked each time, and the codes
    keep one remembered entry, not one per scales tensor."""
    k = 32
    x = torch.randn(1, k, generator=gen).to(device)
    w_int8, w_scales = pack_weights(quantize_ref(torch.randn(4, k, generator=gen).to(device), W_SPEC))
    before = len(w8a8_module._checked_weights)
    for _ in range(5):
        w8a8_matmul(x, w_int8, w_scales.clone())
    assert len(w8a8_module._checked_weights) == before + 1
