"""gemlite as a peer: its A16Wn Triton kernels (16-bit activations, 8/4/2-bit weights with a scale
and a zero per group or channel) on the case's own quantized weights, so it needs no own format and
is verified against the same W_hat as the project's kernel. Written against gemlite 0.6.

gemlite is imported inside the functions (importing it queries the GPU): without it the record
gives a `skipped` row that names it (Needs), and the checks of which cases it runs raise Skipped
before any import.

The case's format in gemlite's terms. gemlite's kernels dequantize each weight as W_q * scales +
zeros in the activations' dtype, one fused multiply-add (`GemLiteLinearTriton.pack` with
fma_mode=True: W_group_mode 4); the case's asymmetric format is w_hat = q * scale + zero with the
float zero point zero = the segment's minimum, which is that form with gemlite's `zeros` = the
case's zero. pack() takes a zero point in the (W_q - z) * s convention and stores -z * s, rounded,
so the case's zero is stored over it as it is (converting it to z = -zero / scale and back would
not give it exactly); per channel, where pack() would pick its post-scaling mode, the mode is set to
the same per-group one with one group of K (A16Wn.from_weights sets modes after pack() the same
way). The symmetric format is gemlite's integer shift: the stored field is the code plus 2^(bits-1),
and pack() with that integer as `zeros` dequantizes (W_q - zeros) * scales, the code times the scale.
gemlite's bytes are the case's (packed codes, and scales and zeros in the activations' dtype; a
4-byte integer zero when symmetric).

Accumulation: on Hopper, gemlite 0.6 by default adds the K splits of its bfloat16 GEMV
(gemv_revsplitK) into the output with bfloat16 atomic adds, so every partial sum is rounded to 8
bits as it lands. That failed verification on the H200 (relative 0.019 against the float64
product at 8192^2, over the bound 2 eps(bf16) + K eps(fp32) = 0.0166, which assumes float32
accumulation as every other kernel keeps; results/h200/peers-20261203T091124Z, in git history
at 61fff38). The adapter turns that off with gemlite's own switch for it
(`set_native_atomic_bfp16(False)`, "disable for higher accuracy"): gemlite then adds the splits
in a float32 buffer and casts. float16 outputs are unaffected (gemlite adds them in float16
either way, within the bound).
"""

from __future__ import annotations

from typing import Callable

import torch

from quantbench import kernels
from quantbench.kernels.spec import INTEGER_SCHEMES

from ..ops import MatmulInputs, Skipped
from .records import Impl, Needs, Role

GEMLITE_MIN_K = 32  # GemLiteLinearTriton.MIN_SIZE: in_features must be a multiple of it


def check(inp: MatmulInputs) -> None:
    """Skipped for a case gemlite's A16Wn does not run as the case's own format."""
    spec, x = inp.q.spec, inp.x
    if spec.scheme not in INTEGER_SCHEMES:
        raise Skipped(f"gemlite's A16Wn takes integer codes with scales and zeros, not the {spec.scheme} codebook")
    if spec.granularity == "tensor":
        raise Skipped("gemlite keeps a scale per output channel or per group, not one per tensor")
    if x.dtype not in (torch.float16, torch.bfloat16):
        # tl.dot on float32 operands runs in TF32 unless told otherwise, and gemlite does not say
        raise Skipped(f"gemlite's A16Wn runs float16 and bfloat16 activations, not "
                      f"{str(x.dtype).removeprefix('torch.')} (its float32 path multiplies in TF32)")
    k = inp.q.shape[1]
    if k % GEMLITE_MIN_K:
        raise Skipped(f"gemlite needs K to be a multiple of {GEMLITE_MIN_K}, got K={k}")


def gemlite_layer(inp: MatmulInputs):
    """A GemLiteLinearTriton holding the case's quantized weights (the module docstring says how)."""
    from gemlite import DType, GemLiteLinearTriton, set_native_atomic_bfp16
    set_native_atomic_bfp16(False)  # float32 accumulation of bfloat16 splits (module docstring)
    q, x = inp.q, inp.x
    spec, (n, k) = q.spec, q.shape
    dtype = {torch.float16: DType.FP16, torch.bfloat16: DType.BF16}[x.dtype]
    layer = GemLiteLinearTriton(spec.bits, group_size=spec.group_size if spec.granularity == "group" else k,
                                in_features=k, out_features=n, input_dtype=dtype, output_dtype=dtype)
    fields = kernels.unpack_fields(q.codes, spec.bits, k).to(torch.uint8)  # [N, K], one field per weight
    if spec.scheme == "symmetric":
        layer.pack(fields, q.scales, zeros=spec.offset)
        return layer
    # row-major copies: quantize's scale+zero pairs are strided views (kernels/spec.py, Storage)
    layer.pack(fields, q.scales.contiguous(), zeros=q.zeros.contiguous(), fma_mode=True)
    # [groups, N], the layout pack() gives scales and zeros
    layer.zeros = torch.nn.Parameter(q.zeros.t().contiguous(), requires_grad=False)
    layer.W_group_mode, layer.channel_scale_mode = 4, 0  # W_q * scales + zeros in-kernel, no post-scaling
    return layer


def gemlite_matmul(inp: MatmulInputs) -> Callable[[], torch.Tensor]:
    check(inp)
    layer, x = gemlite_layer(inp), inp.x
    return lambda: layer(x)


def gemlite_path(inp: MatmulInputs) -> str:
    """The kernel gemlite picks for M rows and the bit width (GEMV_REVSPLITK, GEMM_SPLITK, GEMM, ...)."""
    from gemlite.core import get_matmul_type
    return get_matmul_type(inp.x.shape[0], inp.q.spec.bits)


GEMLITE_IMPLS: list[Impl] = [
    Impl(op="matmul", name="gemlite", role=Role.PEER, factory=gemlite_matmul, path=gemlite_path,
         needs=Needs(cuda=True, packages=("gemlite",)),
         description="gemlite A16Wn GemLiteLinearTriton on the case's codes, scales and zeros (8/4/2 bits); "
                     "bfloat16 splits added in float32 (set_native_atomic_bfp16(False))"),
]
