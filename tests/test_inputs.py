"""Determinism: the same config and seed give the same inputs and the same codes, run after run."""

import subprocess
import sys

import torch

from quantbench.harness.config import NormalWeights
from quantbench.harness.ops.inputs import activations, derived_seed, make_weights
from quantbench.kernels import QuantSpec, quantize


def test_derived_seeds_are_stable_and_distinct():
    assert derived_seed(0, "weights", 64, 128) == derived_seed(0, "weights", 64, 128)
    assert len({derived_seed(0, "weights", 64, 128), derived_seed(1, "weights", 64, 128),
                derived_seed(0, "weights", 128, 64), derived_seed(0, "x", 64, 128)}) == 4


def test_same_seed_same_weights_and_codes_in_another_process():
    """Inputs are drawn on the CPU from sha256-derived seeds, so another process (or a GPU machine,
    which moves the CPU-drawn tensor) sees the same bits."""
    w = make_weights(NormalWeights(std=2.0), 7, 16, 64, "float16", "cpu")
    codes = quantize(w, QuantSpec(4, "asymmetric", "group", 32)).codes
    script = ("import os; os.environ['TRITON_INTERPRET'] = '1'\n"
              "import torch\n"
              "from quantbench.harness.config import NormalWeights\n"
              "from quantbench.harness.ops.inputs import make_weights\n"
              "from quantbench.kernels import QuantSpec, quantize\n"
              "w = make_weights(NormalWeights(std=2.0), 7, 16, 64, 'float16', 'cpu')\n"
              "q = quantize(w, QuantSpec(4, 'asymmetric', 'group', 32))\n"
              "print(w.view(torch.int16).sum().item(), q.codes.sum().item())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(w.view(torch.int16).sum().item()), str(codes.sum().item())]
    assert not torch.equal(w, make_weights(NormalWeights(std=2.0), 8, 16, 64, "float16", "cpu"))


def test_activations_depend_on_the_shape_not_the_case():
    a = activations(0, 3, 64, "float32", "cpu")
    assert torch.equal(a, activations(0, 3, 64, "float32", "cpu"))
    assert a.shape == (3, 64) and not torch.equal(a[:1], activations(0, 1, 64, "float32", "cpu"))
