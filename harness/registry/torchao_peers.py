"""torchao as a peer, on its own quantization of the case's weights: a bias-free torch.nn.Linear
holding them, quantized in place by `torchao.quantization.quantize_` with int4 weight-only
(tinygemm's layout), int8 weight-only (per channel) and float8 dynamic activations and weights
(per row). Written against torchao 0.18 (its version-2 configs and tensor subclasses).

torchao is imported inside the functions: without it every record gives a `skipped` row that names
it (Needs), and the checks of which cases a record runs raise Skipped before any import. Every
config is built with set_inductor_config=False: by default quantize_ changes torch._inductor's
global settings, which would change the torch_compile rows of the same run.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..ops import MatmulInputs, Skipped, W8A8Inputs
from .builtin import E4M3, E4M3_MAX, fp8_rowwise_product
from .records import Impl, Needs, OwnWeights, Role

INT4_GROUP_SIZES = (32, 64, 128, 256)  # Int4WeightOnlyConfig's (and tinygemm's) group sizes
IDENTITY_ROWS = 4096  # rows of the identity per call when W_hat is read back through tinygemm


def quantized_linear(w: torch.Tensor, config) -> torch.nn.Linear:
    """A bias-free Linear holding w [N, K] (its dtype, its device), quantized by torchao's quantize_
    with `config` (in place: quantize_ swaps the weight for a tensor subclass)."""
    from torchao.quantization import quantize_
    n, k = w.shape
    module = torch.nn.Linear(k, n, bias=False, device="meta")
    module.weight = torch.nn.Parameter(w, requires_grad=False)
    quantize_(module, config)
    return module


def quantized_weight(module: torch.nn.Linear, kind: type, what: str):
    """The module's weight, which must now be torchao's `kind`: quantize_ leaves a weight it cannot
    quantize as it was, without an error, and that row would time the dense layer under torchao's name."""
    if not isinstance(module.weight, kind):
        raise RuntimeError(f"torchao's quantize_ left the weight a {type(module.weight).__name__}, not {what}")
    return module.weight


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


# --- int4 weight-only, tinygemm's layout --------------------------------------------------------

def int4_weights(w: torch.Tensor, case) -> OwnWeights:
    """own_format of torchao_int4: Int4WeightOnlyConfig(group_size, int4_packing_format
    "tile_packed_to_4d": tinygemm's layout, run by torch.ops.aten._weight_int4pack_mm; qparams by
    its default TINYGEMM algorithm: asymmetric min-max with a float zero point). K is padded to a
    multiple of 1024 and N of 8 before packing, and the bytes are the padded qdata and
    scale_and_zero torchao keeps. Int4TilePackedTo4dTensor has no dequantize: W_hat is read back
    through the kernel (int4_w_hat)."""
    if (case.bits, case.scheme, case.granularity) != (4, "asymmetric", "group"):
        raise Skipped(f"torchao's Int4WeightOnlyConfig (tinygemm) runs 4-bit asymmetric per-group cases only, "
                      f"not {case.bits}-bit {case.scheme} per {case.granularity}")
    if case.group_size not in INT4_GROUP_SIZES:
        raise Skipped(f"torchao's int4 group_size is one of {', '.join(map(str, INT4_GROUP_SIZES))}, "
                      f"not {case.group_size}")
    if w.dtype != torch.bfloat16:
        raise Skipped(f"torchao's tinygemm int4 layout takes bfloat16 weights and activations, not {case.dtype}")
    from torchao.quantization import Int4TilePackedTo4dTensor, Int4WeightOnlyConfig
    from torchao.quantization.quantize_.workflows import Int4ChooseQParamsAlgorithm, Int4PackingFormat
    config = Int4WeightOnlyConfig(group_size=case.group_size, int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D,
                                  int4_choose_qparams_algorithm=Int4ChooseQParamsAlgorithm.TINYGEMM, version=2,
                                  set_inductor_config=False)
    module = quantized_linear(w, config)
    t = quantized_weight(module, Int4TilePackedTo4dTensor, "an Int4TilePackedTo4dTensor")
    return OwnWeights(state=module, w_hat=int4_w_hat(module, case.K),
                      weight_bytes=tensor_bytes(t.qdata, t.scale_and_zero))


def int4_w_hat(module: torch.nn.Linear, k: int) -> torch.Tensor:
    """The weights tinygemm multiplies by, float32 [N, K], read back through the layer itself: row i
    of the identity gives column i of W_hat exactly (one product by 1.0 and zeros, summed in
    float32, rounded to bfloat16, the dtype tinygemm dequantizes to). In blocks of IDENTITY_ROWS
    rows, so that a large K does not need a K x K identity at once."""
    device = module.weight.device
    blocks = []
    for start in range(0, k, IDENTITY_ROWS):
        rows = torch.arange(start, min(start + IDENTITY_ROWS, k), device=device)
        eye = torch.zeros(len(rows), k, dtype=torch.bfloat16, device=device)
        eye[rows - start, rows] = 1
        blocks.append(module(eye))  # [rows, N]: W_hat[:, rows]^T
    return torch.cat(blocks).t().float()


# --- int8 weight-only, per channel --------------------------------------------------------------

def int8_weights(w: torch.Tensor, case) -> OwnWeights:
    """own_format of torchao_int8: Int8WeightOnlyConfig() (PerRow: one float32 scale per output
    channel, symmetric: scale = max|row| / 127.5, codes in [-128, 127]). Its linear multiplies x by
    the codes in x's dtype and the product by the scale cast to x's dtype, so W_hat is codes *
    that cast scale (in float64, exact). Bytes: qdata, scale and the int8 zero_point (all zeros)
    torchao keeps."""
    if (case.bits, case.scheme, case.granularity) != (8, "symmetric", "channel"):
        raise Skipped(f"torchao's Int8WeightOnlyConfig runs 8-bit symmetric per-channel cases only, "
                      f"not {case.bits}-bit {case.scheme} per {case.granularity}")
    from torchao.quantization import Int8Tensor, Int8WeightOnlyConfig, PerRow
    module = quantized_linear(w, Int8WeightOnlyConfig(granularity=PerRow(), version=2, set_inductor_config=False))
    t = quantized_weight(module, Int8Tensor, "an Int8Tensor")
    w_hat = t.qdata.double() * t.scale.to(w.dtype).double().reshape(-1, 1)  # float64: exact for a float32 scale too
    return OwnWeights(state=module, w_hat=w_hat, weight_bytes=tensor_bytes(t.qdata, t.scale, t.zero_point))


# --- float8 dynamic activations and weights, per row --------------------------------------------

def torchao_fp8_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchao 0.18's per-row float8 of t [R, C] (Float8Tensor.from_hp with KernelPreference.TORCH:
    _choose_scale_float8, then _quantize_affine_float8), op for op: scale = max|row| / 448 computed
    in t's own dtype (bfloat16: the scale is rounded to it), then float32, with no floor (an
    all-zero row gets scale 0 and NaN codes, as in torchao); codes = (t in float32) / scale,
    clamped to +-448, cast to e4m3. Returns (codes [R, C], scales [R, 1] float32)."""
    scale = (t.abs().amax(dim=-1, keepdim=True) / E4M3_MAX).to(torch.float32)
    return (t.to(torch.float32) / scale).clamp(min=-E4M3_MAX, max=E4M3_MAX).to(E4M3), scale


def fp8_weights(w: torch.Tensor, case) -> OwnWeights:
    """own_format of torchao_fp8: Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(),
    kernel_preference=TORCH: torch's quantization and torch._scaled_mm, whether or not mslk is
    installed; mm_config left at torchao's default, use_fast_accum=True). Its product quantizes x
    as torchao does (torchao_fp8_rows), which is first checked to give torchao's own weight codes
    and scales bit for bit. Bytes: e4m3 codes and float32 scales."""
    if w.dtype != torch.bfloat16:
        raise Skipped(f"torchao's per-row float8 takes bfloat16 weights only (its PerRow quantization asserts it), "
                      f"not {case.dtype}")
    n, k = w.shape
    if k % 16 or n % 16:
        # torchao's _fp8_mm_compat would leave such a weight unquantized, without an error
        raise Skipped(f"torchao quantizes to float8 only weights whose K and N are multiples of 16 "
                      f"(torch._scaled_mm's rule), got N={n}, K={k}")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8Tensor, PerRow
    from torchao.quantization.quantize_.common import KernelPreference
    module = quantized_linear(w, Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), kernel_preference=KernelPreference.TORCH, version=2, set_inductor_config=False))
    t = quantized_weight(module, Float8Tensor, "a Float8Tensor")
    wq, sw = t.qdata, t.scale
    codes, scales = torchao_fp8_rows(w)
    if not (torch.equal(codes.view(torch.uint8), wq.view(torch.uint8)) and torch.equal(scales, sw)):
        raise RuntimeError("torchao's float8 weight codes or scales differ from torchao_fp8_rows of the same "
                           "weights: the product this row is checked against would not be torchao's method")
    return OwnWeights(state=module, w_hat=wq.double() * sw.double().reshape(-1, 1), weight_bytes=tensor_bytes(wq, sw),
                      product=lambda x: fp8_rowwise_product(*torchao_fp8_rows(x), wq, sw))


def linear(inp: MatmulInputs | W8A8Inputs) -> Callable[[], torch.Tensor]:
    """The quantized Linear (the own format's state) on x: torchao's tensor subclass dispatches
    F.linear to its kernel (tinygemm, an int8-weight mm, or per-row quantization of x and
    torch._scaled_mm)."""
    module, x = inp.own, inp.x
    return lambda: module(x)


P = Role.PEER
TORCHAO = Needs(cuda=True, packages=("torchao",))

TORCHAO_IMPLS: list[Impl] = [
    Impl(op="matmul", name="torchao_int4", role=P, factory=linear, own_format=int4_weights,
         needs=Needs(cuda=True, packages=("torchao",), min_capability=(8, 0)),
         description="torchao quantize_ Int4WeightOnlyConfig, tinygemm layout (_weight_int4pack_mm), bfloat16"),
    Impl(op="matmul", name="torchao_int8", role=P, factory=linear, own_format=int8_weights, needs=TORCHAO,
         description="torchao quantize_ Int8WeightOnlyConfig, per channel"),
    Impl(op="matmul_w8a8", name="torchao_fp8", role=P, factory=linear, own_format=fp8_weights,
         needs=Needs(cuda=True, packages=("torchao",), min_capability=(8, 9)),
         description="torchao quantize_ Float8DynamicActivationFloat8WeightConfig(PerRow), torch._scaled_mm, bfloat16"),
]
