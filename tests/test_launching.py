"""The launch shortcut (kernels/launching.py) and the once-per-weight checks: what decides whether
a compiled kernel may be reused, and that a weight is checked before its first use. The direct
launch itself runs on a GPU only (tests/gpu/test_kernel_paths.py)."""

import pytest
import torch

from quantbench.kernels import QuantSpec, qmatmul, quantize_ref
from quantbench.kernels import launching, references
from quantbench.kernels.spec import QuantizedTensor


def test_a_call_signature_covers_what_triton_specializes_on():
    base = torch.zeros(64, dtype=torch.float16)
    same = torch.zeros(64, dtype=torch.float16)
    assert launching._signature((base, 16, 3)) == launching._signature((same, 16, 3))
    assert launching._signature((base[1:], 16, 3)) != launching._signature((base, 16, 3))  # address not 16-byte aligned
    assert launching._signature((base.float(), 16, 3)) != launching._signature((base, 16, 3))  # dtype
    assert launching._signature((base, 17, 3)) != launching._signature((base, 16, 3))  # any integer


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


def test_under_the_interpreter_nothing_is_planned():
    from quantbench.kernels import quantized_matmul as qm
    q = quantize_ref(torch.randn(32, 64), QuantSpec(4, "asymmetric", "group", 32))
    qmatmul(torch.randn(1, 64), q)
    qmatmul(torch.randn(1, 64), q)
    assert not qm._gemv_launch.plans


def test_a_weight_is_checked_on_first_use_and_a_bad_one_every_time():
    spec = QuantSpec(4, "asymmetric", "group", 32)
    good = quantize_ref(torch.randn(32, 64), spec)
    references.check_weight_once(good)
    assert references._checked_weights[id(good)]() is good
    bad = QuantizedTensor(good.codes[:, :-1], good.scales, good.zeros, spec, good.shape)
    for _ in range(2):
        with pytest.raises(ValueError, match="codes must be"):
            qmatmul(torch.randn(1, 64), bad)
    seen = references._checked_weights.get(id(bad))  # an id may be a freed weight's, its reference dead
    assert seen is None or seen() is not bad
