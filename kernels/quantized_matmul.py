"""Weight-only quantized matmul: y = x @ dequantize(Wq)^T.

W8A16, W4A16 and W2A16 (any scheme and granularity of spec.py, NF4 and FP8 too) with float32, float16 or bfloat16
activations and float32 accumulation. The codes are read in the packed layout that ``quantize``
writes ([N, ceil(K * bits / 8)] uint8, packed along K, element k of a row in byte k // (8 // bits)
at bit (k % (8 // bits)) * bits). The fused kernels never expand them in memory: each program
unpacks and scales its weight tile in registers.

The path is chosen by M (and, for large M, the bit width), as the fast libraries do
(``qmatmul_path``; the results' `path` column; a weight whose values may pass the activations'
range takes dequantize+cuBLAS at every M, ``qmatmul_route``):
- ``qgemv_kernel`` for M = 1, on the CUDA cores (a tl.dot padded to 16 rows wastes most of its
  work). Each program streams BLOCK_N weight rows over its part of K (K may be split over
  programs), reading the codes as int32 words where it can.
- ``qgemm_kernel`` (qgemm.py): a tiled tl.dot GEMM with the dequantization inside the K loop, computed
  transposed (y^T = W_hat x^T) so that the dequantized weight, which lives in registers, is the
  dot's left operand (Hopper's wgmma reads its left operand from registers, its right one from
  shared memory, where the pipelined x tile already is). For M <= SPLIT_MAX_M there are too few
  output tiles to fill the GPU, so K is split too (split_k.py).
- from DEQUANT_MIN_M rows (float16, bfloat16), the Triton ``dequantize`` into a new buffer, then
  cuBLAS: there the product is compute-bound and the fused GEMM cannot hide the unpacking.
The kernels are autotuned (the GEMM keyed on the M bucket, N, K and the format; configs that
cannot apply are pruned; each config timed by tuning.tuning_bench), and after the first call of
a call signature launched directly (launching.py). Under the interpreter one small config is used
instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .checks import cdiv, check_matrix, check_same_device, inner_dim_error, next_power_of_2
from .dequantization import (dequantize_choice, dequantize_prepared, field_values, nf4_word_levels, row_params,
                             segment_scales)
from .field_ptx import int_word_fields
from .exact_math import ON_GPU
from .launching import INTERPRETED, Launcher
from .matmul_tiles import GEMM_CONFIGS, GEMV_CONFIGS, SPLIT_CONFIGS, SPLIT_MAX_M, prune, prune_gemm
from .prepared import PreparedWeight, prepared
from .references import dequantize_ref
from .scale_words import load_scale_zero_words
from .qgemm import qgemm_kernel
from .split_k import finish_tile, split_workspace, split_workspace_addresses
from .tuning import tuning_bench
from .unit_activations import word_activations
from .spec import QuantizedTensor



@triton.jit
def qgemv_kernel(x_ptr, units_ptr, scales_ptr, zeros_ptr, table_ptr, second_ptr, mean_ptr, y_ptr, partials_ptr,
                 tickets_ptr, N, K, stride_un, stride_sn, stride_sg, row_units,
                 BITS: tl.constexpr, FIELDS: tl.constexpr, OFFSET: tl.constexpr, CODE: tl.constexpr,
                 SYMMETRIC: tl.constexpr, GRANULARITY: tl.constexpr, GROUP: tl.constexpr, DQ: tl.constexpr,
                 SCALE_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 SPLIT_K: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, STAGES: tl.constexpr = 1,
                 FOLD_OFFSET: tl.constexpr = False, SCALE_ZERO_WORDS: tl.constexpr = False):
    """y[1, N] = x[1, K] @ W_hat^T. Grid: (cdiv(N, BLOCK_N), SPLIT_K).

    The codes are read as units of FIELDS bit fields: the packed bytes of ``quantize`` viewed as
    int32 words (FIELDS = 32 // BITS, when a row's bytes are a whole number of aligned words) or
    as uint8 (FIELDS = 8 // BITS); field j of unit u holds column u * FIELDS + j either way, since
    the bytes are little endian. row_units: units per row; stride_un in units. Scales and zeros as
    in dequant_tile, but for per-group ones: the scale of row r and group g at r * stride_sn +
    g * stride_sg, which reads them group-major (prepared.ScaleArgs); SCALE_ZERO_WORDS: the scale
    and the zero in the low and high halves of one 32-bit word there (scales_ptr). BLOCK_K is a
    multiple of FIELDS; with per-group scales BLOCK_K and GROUP are powers of two. EVEN_N /
    EVEN_K: N / K are multiples of BLOCK_N / BLOCK_K (no masks needed).
    SPLIT_K > 1: the K range is cut in SPLIT_K parts, one program each, summed as in finish_tile.

    At M = 1 the arithmetic per weight element is what competes with the bytes (an int4 weight
    of 8192^2 streams in ~8 us on an H200). On the GPU, int4 and int2 words are split by one prmt
    a field into the float bits of 2^23 + field (int_word_fields), then one subtraction (exact)
    and one FMA with its activation; FOLD_OFFSET (asymmetric codes, half-precision activations)
    decodes 1/2 + field / 256 instead and puts the offset back once per unit, with no subtraction
    per element (~5 of float32's 24 bits lost to the larger terms, far below a 16-bit output's
    rounding). What the compiler makes of it: kernels/NOTES.md. STAGES: the K loop's
    pipelining depth. Scales and zeros are applied per unit, not per element:
        sum_k x_k w_k = sum over units u of  s_u * sum_j x_j q_j  +  z_u * sum_j x_j
    with q = field - OFFSET, since the FIELDS elements of a unit share one segment (a group is a
    whole number of units); sum_j x_j depends on the columns only. The codebook schemes (CODE 1,
    2: NF4 levels, e4m3 values; field_values) have no zeros and the same form with q their value.
    The tile is held as [BLOCK_N, segments, units per segment], a segment being the columns that
    share one scale (a group, or the whole tile), so a scale broadcasts without a reshape. Each
    field is multiplied by the activations of its own columns, so the fields are never
    interleaved: for int32 words of 8 or 16 fields the activations of a unit's columns come in one
    load and are taken apart in registers (word_activations; the compiler passes them through
    shared memory to the words' layout), for byte units one strided 2-byte load a field. The weight
    is read once, so its loads ask to be evicted first; x is read by every program, so it asks to stay.
    """
    FIELD_MASK: tl.constexpr = (1 << BITS) - 1
    SEG: tl.constexpr = min(GROUP, BLOCK_K) if GRANULARITY == 2 else BLOCK_K
    NSEG: tl.constexpr = BLOCK_K // SEG
    SEG_UNITS: tl.constexpr = SEG // FIELDS
    pid_n = tl.program_id(0)
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = tl.program_id(1) * k_per_split
    k_hi = min(K, k_lo + k_per_split)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    segs = tl.arange(0, NSEG)
    tile_units = segs[:, None] * SEG_UNITS + tl.arange(0, SEG_UNITS)[None, :]  # [NSEG, SEG_UNITS]
    # NF4 in int32 words: the 8 fields of every word of the tile looked up at once (nf4_word_levels)
    NF4_WORDS: tl.constexpr = CODE == 1 and FIELDS == 8
    INT_WORDS: tl.constexpr = CODE == 0 and ON_GPU and BITS < 8 and FIELDS == 32 // BITS
    # the activations of a unit's 8 or 16 columns in one load (word_activations)
    X_UNITS: tl.constexpr = FIELDS >= 8
    acc = tl.zeros((BLOCK_N, NSEG, SEG_UNITS), tl.float32)
    x_total = tl.zeros((NSEG, SEG_UNITS), tl.float32)  # sum of x (per-channel and per-tensor zeros)
    # STAGES > 1: the loads of the next tiles are issued (through shared memory) before this one is reduced
    for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=STAGES):
        unit_cols = k0 // FIELDS + tile_units
        unit_ptrs = units_ptr + rows[:, None, None] * stride_un + unit_cols[None, :, :]
        if EVEN_N and EVEN_K:
            packed = tl.load(unit_ptrs, eviction_policy="evict_first")
        else:
            packed = tl.load(unit_ptrs, mask=row_ok[:, None, None] & (unit_cols < row_units)[None, :, :], other=0,
                             eviction_policy="evict_first")
        packed = packed.to(tl.int32)
        if NF4_WORDS:
            levels = nf4_word_levels(packed, table_ptr)  # the 8 fields' levels, one table lookup per tile
        if INT_WORDS:
            # the bits of 2^23 + field (or 1/2 + field / 256), one prmt each
            biased = int_word_fields(packed, BITS, FOLD_OFFSET)
        if X_UNITS:
            x_fields = word_activations(x_ptr, k0 + tile_units * FIELDS, K, FIELDS, EVEN_K)
        for j in tl.static_range(FIELDS):
            if NF4_WORDS:
                q = levels[j]
            elif INT_WORDS and FOLD_OFFSET:
                q = biased[j].to(tl.float32, bitcast=True)
            elif INT_WORDS:
                q = biased[j].to(tl.float32, bitcast=True) - (8388608.0 + OFFSET)
            else:
                q = field_values((packed >> (j * BITS)) & FIELD_MASK, table_ptr, OFFSET, CODE)
            if X_UNITS:
                xv = x_fields[j]
            else:  # one 2-byte load a field, at a stride of FIELDS elements
                cols = k0 + tile_units * FIELDS + j
                if EVEN_K:
                    xv = tl.load(x_ptr + cols, eviction_policy="evict_last").to(tl.float32)
                else:
                    xv = tl.load(x_ptr + cols, mask=cols < K, other=0.0, eviction_policy="evict_last").to(tl.float32)
            if j == 0:
                dot = xv[None, :, :] * q
                x_sum = xv
            else:
                dot += xv[None, :, :] * q
                x_sum += xv
        if INT_WORDS and FOLD_OFFSET:
            # sum x (field - OFFSET) = 256 sum x (1/2 + field / 256) - (128 + OFFSET) sum x
            dot = dot * 256.0 - (x_sum * (128.0 + OFFSET))[None, :, :]
        if GRANULARITY == 2:
            seg_cols = k0 + segs * SEG
            s_off = rows[:, None] * stride_sn + (seg_cols // GROUP)[None, :] * stride_sg
            s_ok = row_ok[:, None] & (seg_cols < K)[None, :]
            if DQ:
                flat = rows[:, None] * tl.cdiv(K, GROUP) + (seg_cols // GROUP)[None, :]
                scale = segment_scales(scales_ptr, second_ptr, mean_ptr, s_off, flat, s_ok, DQ, SCALE_DTYPE)
            elif SCALE_ZERO_WORDS:
                scale, zero = load_scale_zero_words(scales_ptr, s_off, s_ok, SCALE_DTYPE, EVEN_N and EVEN_K)
            elif EVEN_N and EVEN_K:
                scale = tl.load(scales_ptr + s_off).to(tl.float32)
            else:
                scale = tl.load(scales_ptr + s_off, mask=s_ok, other=1.0).to(tl.float32)
            if not SYMMETRIC and not SCALE_ZERO_WORDS:
                if EVEN_N and EVEN_K:
                    zero = tl.load(zeros_ptr + s_off).to(tl.float32)
                else:
                    zero = tl.load(zeros_ptr + s_off, mask=s_ok, other=0.0).to(tl.float32)
            acc += dot * scale[:, :, None]
            if not SYMMETRIC:
                acc += x_sum[None, :, :] * zero[:, :, None]
        else:
            acc += dot
            x_total += x_sum
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    if GRANULARITY != 2:
        scale, zero = row_params(scales_ptr, zeros_ptr, rows * (GRANULARITY == 1), N, stride_sn, 0, SYMMETRIC)
        y = y * scale
        if not SYMMETRIC:  # not + sum(x) * 0: an infinite activation would make that NaN
            y += tl.sum(tl.sum(x_total, axis=1), axis=0) * zero
    finish_tile(y_ptr, partials_ptr, tickets_ptr, pid_n, y[None, :], tl.arange(0, 1), rows, 1, N, N, SPLIT_K)


KEY = ["M_BUCKET", "N", "K", "BITS", "CODE", "SYMMETRIC", "GRANULARITY", "GROUP", "SCALE_ZERO_WORDS"]
# EVEN_N / EVEN_K: the tile chosen divides N / K, so the weight's loads need no mask
even_tiles = triton.heuristics({"EVEN_N": lambda a: a["N"] % a["BLOCK_N"] == 0,
                                "EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})
qgemv_tuned = triton.autotune(GEMV_CONFIGS, key=["N", "K", "BITS", "FIELDS", "CODE", "SYMMETRIC", "GRANULARITY",
                                                 "GROUP", "FOLD_OFFSET", "SCALE_ZERO_WORDS"],
                              prune_configs_by={"early_config_prune": prune}, do_bench=tuning_bench)(
    even_tiles(qgemv_kernel))
qgemm_tuned = triton.autotune(GEMM_CONFIGS, key=KEY + ["IEEE"], prune_configs_by={"early_config_prune": prune_gemm},
                              do_bench=tuning_bench)(even_tiles(qgemm_kernel))
qgemm_split_tuned = triton.autotune(SPLIT_CONFIGS, key=KEY + ["IEEE"],
                                    prune_configs_by={"early_config_prune": prune_gemm},
                                    do_bench=tuning_bench)(even_tiles(qgemm_kernel))


_gemv_launch = Launcher(qgemv_tuned)
_gemm_launch = Launcher(qgemm_tuned)
_split_launch = Launcher(qgemm_split_tuned)


# the fixed tiles under the interpreter, which would take minutes to autotune
INTERPRETER_GEMV = {"BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 2, "STAGES": 1}
INTERPRETER_GEMM = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}


def _m_bucket(m: int) -> int:
    return min(next_power_of_2(m), 4096)


def _gemv(x: torch.Tensor, q: QuantizedTensor, p: PreparedWeight, y: torch.Tensor) -> None:
    n, k = q.shape
    # the smallest BLOCK_N is 4, which bounds the number of tickets
    workspace = (x.device, n, cdiv(n, 4))
    scales = p.gemv_scales()
    sizes = p.gemv_sizes()
    constants = p.gemv_constants_for(x.dtype)
    tensors = lambda: (x, p.units, scales.scales, scales.zeros, p.table, p.second, p.mean, y,
                       *split_workspace(*workspace), *sizes)
    if INTERPRETED:
        qgemv_kernel[(cdiv(n, INTERPRETER_GEMV["BLOCK_N"]), INTERPRETER_GEMV["SPLIT_K"])](
            *tensors(), **constants, **INTERPRETER_GEMV, EVEN_N=False, EVEN_K=False)
    else:
        # the weight's share of the launch key is kept (prepared.py); x's added here. y and the
        # workspace (float32 and int32) are fresh from the allocator and so 16-byte aligned. A
        # direct launch takes the weight's tensors and the workspace as their addresses
        # (ScaleArgs.pointers, split_workspace_addresses).
        key = (scales.key, x.dtype, x.data_ptr() % 16 == 0)
        _gemv_launch(lambda meta: (cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"]),
                     (x, *scales.pointers, y, *split_workspace_addresses(*workspace), *sizes), constants, key,
                     tensors)


def _gemm(x: torch.Tensor, q: QuantizedTensor, p: PreparedWeight, y: torch.Tensor, split: bool) -> None:
    m, stride_x = x.shape[0], x.stride(0)
    n, k, stride_codes, stride_sn, stride_sg = p.gemm_sizes()
    ieee = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and INTERPRETED)
    # tiles are at least 16 x 32, which bounds the number of tickets
    workspace = (x.device, m * n, cdiv(m, 16) * cdiv(n, 32))
    scales = p.gemm_scales()
    # y is fresh from the allocator, its row stride n
    sizes = (m, n, k, stride_x, stride_codes, stride_sn, stride_sg, n, _m_bucket(m))
    constants = p.gemm_constants_for(ieee)
    tensors = lambda: (x, q.codes, scales.scales, scales.zeros, p.table, p.second, p.mean, y,
                       *(split_workspace(*workspace) if split else (y, y)), *sizes)
    if INTERPRETED:
        split_k = 2 if split else 1
        qgemm_kernel[(cdiv(m, INTERPRETER_GEMM["BLOCK_M"]) * cdiv(n, INTERPRETER_GEMM["BLOCK_N"]), split_k)](
            *tensors(), **constants, **INTERPRETER_GEMM, SPLIT_K=split_k)
    else:
        # y is 16-byte aligned too; a direct launch takes the weight's tensors and the workspace as
        # their addresses (ScaleArgs.pointers, split_workspace_addresses; the unsplit GEMM never
        # reads them: y stands in). The sizes' signature is m's and x's row stride's (the key),
        # the rest the weight's (scales.key); ieee follows from x's dtype.
        key = (scales.key, x.dtype, x.data_ptr() % 16 == 0, m, stride_x)
        grid = lambda meta: (cdiv(m, meta["BLOCK_M"]) * cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])
        addresses = split_workspace_addresses(*workspace) if split else (y, y)
        (_split_launch if split else _gemm_launch)(grid, (x, *scales.pointers, y, *addresses, *sizes),
                                                   constants, key, tensors)


# From this many rows on, float16 and bfloat16 products dequantize the weight (a new [N, K]
# buffer in x's dtype) and call cuBLAS: there the product is compute-bound and the fused GEMM
# cannot hide the unpacking inside its K loop. Measured on an H200 at N = K = 8192, float16
# (kernels/NOTES.md): for int4 codes the dequantize (~51 us) plus cuBLAS beat the fused GEMM from
# M = 128 (94 against 137 us; 2-bit codes, not measured, unpack at least as slowly, so they
# follow); 8-bit codes unpack cheaply, and the fused GEMM stays ahead up to M = 256 (91 against
# 106 us) and behind from M = 1024 (246 against 234).
DEQUANT_MIN_M = {8: 1024, 4: 128, 2: 128}


def qmatmul_path(m: int, dtype: torch.dtype = torch.float16, bits: int = 4) -> str:
    """The kernel qmatmul runs for M rows of activations of `dtype` and a weight of `bits`: the
    GEMV at M = 1, the split-K GEMM up to SPLIT_MAX_M, then the GEMM; from DEQUANT_MIN_M[bits]
    rows of float16 or bfloat16, the Triton dequantize followed by cuBLAS (float32 stays on the
    GEMM, which multiplies in full float32 where cuBLAS would follow the TF32 setting)."""
    if m == 1:
        return "gemv"
    if m <= SPLIT_MAX_M:
        return "split-k gemm"
    if m >= DEQUANT_MIN_M[bits] and dtype in (torch.float16, torch.bfloat16):
        return "dequantize+cublas"
    return "gemm"


def qmatmul_route(x: torch.Tensor, q: QuantizedTensor) -> str:
    """The kernel qmatmul(x, q) runs: qmatmul_path's, except that activations meet a weight whose
    values may pass their dtype's range (PreparedWeight.fits) on dequantize+cublas at every M. The
    reference saturates such values to the dtype's largest, and so does dequantize; the GEMV,
    which multiplies in float32 and scales per unit, would not, and the GEMMs' tiles would
    overflow to inf in their conversion for tl.dot (NaN outputs). (float32: only a weight built
    by hand with scales near float32's largest; cuBLAS then follows PyTorch's TF32 setting.)
    x is checked as qmatmul checks it."""
    check_matrix("x", x, on_kernel_device=False)
    p = prepared(q)
    if x.shape[1] != q.shape[1]:
        raise inner_dim_error(x, q.shape[1])
    return _route(x.shape[0], x.dtype, q, p)


def _route(m: int, dtype: torch.dtype, q: QuantizedTensor, p: PreparedWeight) -> str:
    path = qmatmul_path(m, dtype, q.spec.bits)
    if path != "dequantize+cublas" and not p.fits(dtype):
        return "dequantize+cublas"
    return path


def qmatmul_config(x: torch.Tensor, q: QuantizedTensor) -> str | None:
    """The launch configuration of the kernel qmatmul(x, q) runs, as its last launch ran it: the
    autotuner's choice for the GEMV or GEMM qmatmul_path picks (Launcher.last_choice), the
    dequantize plan's tile then cuBLAS, or the fixed tile under the interpreter; for the GEMV and
    the GEMMs, the layout of the copy of the scales they read, where they read one
    (ScaleArgs.describe). Read it right after the call: a launcher remembers its last launch only
    (the results' kernel_config)."""
    path = qmatmul_route(x, q)
    if path == "dequantize+cublas":
        beyond = "" if qmatmul_path(x.shape[0], x.dtype, q.spec.bits) == path else \
            f" (the weight's values may pass {str(x.dtype).removeprefix('torch.')}'s range)"
        return f"dequantize {dequantize_choice(q, x.dtype)}, then cuBLAS{beyond}"
    if INTERPRETED:
        fixed = INTERPRETER_GEMV if path == "gemv" else {**INTERPRETER_GEMM, "SPLIT_K": 2 if path != "gemm" else 1}
        config = " ".join(f"{name}={value}" for name, value in fixed.items()) + " (interpreter)"
    else:
        config = {"gemv": _gemv_launch, "split-k gemm": _split_launch, "gemm": _gemm_launch}[path].last_choice
    p = prepared(q)
    layout = (p.gemv_scales() if path == "gemv" else p.gemm_scales()).describe()
    return f"{config}; {layout}" if config and layout else config


def qmatmul(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """y[M, N] = x[M, K] @ dequantize(q)^T in x's dtype; the kernel is chosen by M (qmatmul_path) and,
    for a weight whose values may pass x's range, by that (qmatmul_route).

    x: float32/float16/bfloat16 [M, K], unit stride along K; q: a QuantizedTensor of W [N, K]
    (codes packed along K as written by ``quantize``). float32 x is multiplied in full float32
    (no TF32). q's checks run on its first use only (prepared.py); x is checked every call.
    Infinite activations: with zeros (asymmetric codes) at M = 1, the GEMV's s * sum(x q) +
    z * sum(x) can meet inf - inf, so an output the reference gives as +-inf may come out NaN.
    Finite activations near float32's largest (float32 or bfloat16 x, |x| past ~1e36): the fused
    kernels sum x times the codes (up to 127 for 8-bit codes, 448 for e4m3) and scale the sum
    after, so the sum can overflow to +-inf where the reference, x times the dequantized weight,
    stays finite (symmetric 8-bit per channel and per tensor and fp8 on every fused path,
    symmetric 8-bit per group at M = 1; found by fuzzing, kernels/NOTES.md session 25).
    """
    check_matrix("x", x)
    p = prepared(q)  # q checked on its first use
    n, k = q.shape
    m = x.shape[0]
    if x.shape[1] != k:
        raise inner_dim_error(x, k)
    if x.device != p.units.device:
        check_same_device(x=x, codes=q.codes)
    path = _route(m, x.dtype, q, p)
    if path == "dequantize+cublas":
        # a new [N, K] buffer each call, from PyTorch's caching allocator (so it is reused, and a
        # peak-memory measurement sees it)
        return F.linear(x, dequantize_prepared(q, p, x.dtype))
    y = x.new_empty((m, n))
    if path == "gemv":
        _gemv(x, q, p, y)
    else:
        _gemm(x, q, p, y, split=path == "split-k gemm")
    return y


def qmatmul_ref(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """PyTorch reference with the same contract: the seed notebook's forward pass, dequantize with
    the reference, then matmul (x @ W_hat^T), in x's dtype."""
    check_matrix("x", x, on_kernel_device=False)
    w_hat = dequantize_ref(q, x.dtype)  # q checked there (check_quantized)
    if x.shape[1] != q.shape[1]:
        raise inner_dim_error(x, q.shape[1])
    return torch.matmul(x, w_hat.t())
