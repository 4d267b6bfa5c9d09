"""bitsandbytes as a peer, on its own quantization of the case's weights: QLoRA's NF4 (matmul through
`Linear4bit`, quantize and dequantize through `functional.quantize_4bit` / `dequantize_4bit`) and
LLM.int8 (matmul through `Linear8bitLt`). Written against bitsandbytes 0.50.

bitsandbytes is imported inside the functions: without it every record gives a `skipped` row that
names it (Needs), and the checks of which cases a record runs raise Skipped before any import.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..ops import CodeInputs, MatmulInputs, Skipped, WeightInputs
from .records import Impl, Needs, OwnWeights, Role

NF4_SCHEMES = ("nf4", "nf4_dq")  # nf4_dq: QLoRA's double quantization (compress_statistics=True)
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what functional.quantize_4bit accepts
INT8_THRESHOLD = 6.0  # LLM.int8's outlier threshold (the paper's and transformers' default)
BNB = Needs(cuda=True, packages=("bitsandbytes",))


# --- NF4 (QLoRA) ------------------------------------------------------------------------------

def nf4_params(case) -> tuple[int, bool]:
    """(blocksize, compress_statistics) for an NF4 case; Skipped for a case bitsandbytes' NF4 does
    not run under the case's labels."""
    if case.scheme not in NF4_SCHEMES or case.bits != 4 or case.granularity != "group":
        raise Skipped(f"bitsandbytes NF4 runs the nf4 and nf4_dq schemes (4 bits, granularity group), "
                      f"not {case.bits}-bit {case.scheme} per {case.granularity}")
    if case.group_size not in BLOCKSIZES:
        raise Skipped(f"bitsandbytes' 4-bit blocksize is one of {', '.join(map(str, BLOCKSIZES))}, "
                      f"not group_size {case.group_size}")
    if case.K % case.group_size:
        # quantize_4bit blocks the flattened weight: a block would run from one row into the next
        raise Skipped(f"bitsandbytes' 4-bit blocks run over the flattened weight: with K={case.K} not a "
                      f"multiple of group_size {case.group_size} they would straddle rows, not be the case's groups")
    return case.group_size, case.scheme == "nf4_dq"


def nf4_bytes(packed: torch.Tensor, state) -> int:
    """Every byte the weight keeps: the packed codes and each tensor its QuantState holds: absmax
    (float32 per block; uint8 codes when double-quantized) and `code`, the 16-entry NF4 table;
    double-quantized, also the second level's float32 absmax (one per 256 blocks), its 256-entry
    float32 map and the float32 offset. The tables are counted because they are not shared: in
    bitsandbytes 0.50 get_4bit_type builds a new table for each QuantState and quantize_blockwise
    copies the dynamic map into it (and a state_dict saves both with every layer)."""
    tensors = [packed, state.absmax, state.code]
    if state.nested:
        tensors += [state.offset, state.state2.absmax, state.state2.code]
    return sum(t.numel() * t.element_size() for t in tensors)


def nf4_quantized(w: torch.Tensor, params: tuple[int, bool]) -> tuple[torch.Tensor, object]:
    """bitsandbytes' NF4 of w as Linear4bit's Params4bit makes it: (packed codes, QuantState)."""
    from bitsandbytes import functional as F
    blocksize, nested = params
    return F.quantize_4bit(w.contiguous(), blocksize=blocksize, compress_statistics=nested, quant_type="nf4")


def nf4_weights(w: torch.Tensor, case) -> OwnWeights:
    """own_format of matmul and dequantize: the packed weight and its QuantState, prepared once;
    W_hat is bitsandbytes' own dequantize_4bit of them (in the weight's dtype, as Linear4bit
    computes with them)."""
    params = nf4_params(case)
    from bitsandbytes import functional as F
    packed, state = nf4_quantized(w, params)
    return OwnWeights(state=(packed, state), w_hat=F.dequantize_4bit(packed, state).float(),
                      weight_bytes=nf4_bytes(packed, state))


def nf4_quantize_format(w: torch.Tensor, case) -> OwnWeights:
    """own_format of quantize: what the timed call is given (blocksize, compress_statistics), the
    W_hat of bitsandbytes quantizing w, and `decode`, dequantize_4bit of what the call returns."""
    params = nf4_params(case)  # Skipped before bitsandbytes is imported
    from bitsandbytes import functional as F
    return replace(nf4_weights(w, case), state=params, decode=lambda out: F.dequantize_4bit(*out))


def linear4bit(inp: MatmulInputs) -> Callable[[], torch.Tensor]:
    """A Linear4bit layer (no bias, compute_dtype = the activations' dtype) holding the own
    format's packed weight and QuantState, as a quantized checkpoint loads into it (Linear4bit
    takes no blocksize: a Params4bit carries it). Its forward is bnb.matmul_4bit."""
    import bitsandbytes as bnb
    packed, state = inp.own
    n, k = state.shape
    layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=inp.x.dtype, compress_statistics=state.nested,
                              quant_type="nf4", device="meta")
    layer.weight = bnb.nn.Params4bit(packed, requires_grad=False, quant_state=state, blocksize=state.blocksize,
                                     compress_statistics=state.nested, quant_type="nf4", bnb_quantized=True,
                                     module=layer)
    layer.quant_state = state
    layer.eval()
    x = inp.x
    return lambda: layer(x)


def quantize_4bit(inp: WeightInputs) -> Callable[[], tuple]:
    from bitsandbytes import functional as F
    (blocksize, nested), w = inp.own, inp.w.contiguous()
    return lambda: F.quantize_4bit(w, blocksize=blocksize, compress_statistics=nested, quant_type="nf4")


def dequantize_4bit(inp: CodeInputs) -> Callable[[], torch.Tensor]:
    from bitsandbytes import functional as F
    packed, state = inp.own
    return lambda: F.dequantize_4bit(packed, state)


# --- LLM.int8 -----------------------------------------------------------------------------------

def int8_check(case) -> None:
    """Skipped for a case LLM.int8 does not run under the case's labels."""
    if (case.bits, case.scheme, case.granularity) != (8, "symmetric", "channel"):
        raise Skipped(f"bitsandbytes LLM.int8 runs 8-bit symmetric per-channel cases only, "
                      f"not {case.bits}-bit {case.scheme} per {case.granularity}")
    if case.dtype != "float16":
        # MatMul8bitLt casts other activations to float16 (logging a warning on every call) and
        # int8_mm_dequant writes float16: a bfloat16 or float32 row would be float16 arithmetic
        raise Skipped(f"bitsandbytes LLM.int8 computes in float16 (it casts {case.dtype} activations and "
                      f"writes float16): float16 cases only")


def int8_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLM.int8's row-wise quantization of activations x [M, K], as bitsandbytes 0.50's
    int8_vectorwise_quant does it with threshold 6: (codes [M, K] as float32, the rows' absmax
    float32 [M], the outlier columns bool [K]).

    x is taken to float16. Outlier columns are those with some |x| >= threshold. A row's absmax is
    over its values under the threshold (the outliers left out); codes are round(x * (127 /
    absmax)) in float32, half to even (the CUDA kernel's __float2int_rn; its scale is
    __fdividef(127, absmax), approximate to 2 ulp, which can move a code lying within that of a
    half), and zero in the outlier columns."""
    x16 = x.to(torch.float16)
    magnitude = x16.abs()
    outlier = magnitude >= INT8_THRESHOLD
    columns = outlier.any(dim=0)
    absmax = magnitude.masked_fill(outlier, 0).amax(dim=1).float()
    # a row with nothing under the threshold but zeros has codes 0 (the kernel's 0 * inf is NaN,
    # which __float2int_rn makes 0)
    scale = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    codes = torch.round(x16.float() * scale[:, None])
    codes[:, columns] = 0
    return codes, absmax, columns


def int8_product(x: torch.Tensor, cb: torch.Tensor, scb: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """LLM.int8's output for x [M, K], exactly, as float64 [M, N]: MatMul8bitLt's inference path
    in bitsandbytes 0.50 (int8_vectorwise_quant, then int8_mixed_scaled_mm). The quantized
    activations (int8_activations) times the weight codes CB, exact (int32), scaled by absmax *
    SCB / 127^2; plus the outlier columns of x, in x's dtype, times those columns of the weights'
    own dequantization (W_hat rounded to x's dtype): not of the original weights, which a layer
    with has_fp16_weights=False no longer has."""
    codes, absmax, columns = int8_activations(x)
    y = (codes.double() @ cb.double().t()) * (absmax.double()[:, None] * scb.double()[None, :]) / 127**2
    if columns.any():
        y = y + x[:, columns].double() @ w_hat[:, columns].to(x.dtype).double().t()
    return y


def int8_weights(w: torch.Tensor, case) -> OwnWeights:
    """own_format of bnb_int8: the weight in float16, quantized per row as Int8Params does when
    Linear8bitLt(has_fp16_weights=False) is moved to the GPU: CB int8 [N, K] and SCB float32 [N]
    (the rows' absmax); W_hat is bitsandbytes' int8_vectorwise_dequant (CB * SCB / 127, float32).
    Bytes: CB and SCB, what the layer keeps."""
    int8_check(case)
    from bitsandbytes import functional as F
    cb, scb, _ = F.int8_vectorwise_quant(w.to(torch.float16).contiguous())
    w_hat = F.int8_vectorwise_dequant(cb, scb)
    return OwnWeights(state=(cb, scb), w_hat=w_hat,
                      weight_bytes=cb.numel() * cb.element_size() + scb.numel() * scb.element_size(),
                      product=lambda x: int8_product(x, cb, scb, w_hat))


def linear8bitlt(inp: MatmulInputs) -> Callable[[], torch.Tensor]:
    """A Linear8bitLt layer (threshold 6, has_fp16_weights=False, no bias, eval mode) holding the
    own format's CB and SCB as Int8Params holds them after quantizing. Its forward is bnb.matmul
    (MatMul8bitLt)."""
    import bitsandbytes as bnb
    cb, scb = inp.own
    n, k = cb.shape
    layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
    layer.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
    layer.eval()
    x = inp.x
    return lambda: layer(x)


P = Role.PEER

BITSANDBYTES_IMPLS: list[Impl] = [
    Impl(op="matmul", name="bnb_nf4", role=P, factory=linear4bit, needs=BNB, own_format=nf4_weights,
         description="bitsandbytes Linear4bit NF4 (QLoRA; nf4_dq: compress_statistics), blocksize = group_size"),
    Impl(op="matmul", name="bnb_int8", role=P, factory=linear8bitlt, needs=BNB, own_format=int8_weights,
         description="bitsandbytes Linear8bitLt (LLM.int8, outlier threshold 6), float16"),
    Impl(op="quantize", name="bnb_nf4", role=P, factory=quantize_4bit, needs=BNB, own_format=nf4_quantize_format,
         description="bitsandbytes functional.quantize_4bit NF4, blocksize = group_size"),
    Impl(op="dequantize", name="bnb_nf4", role=P, factory=dequantize_4bit, needs=BNB, own_format=nf4_weights,
         description="bitsandbytes functional.dequantize_4bit NF4, blocksize = group_size"),
]
