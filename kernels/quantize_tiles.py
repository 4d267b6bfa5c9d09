"""How quantization.quantize_kernel is tiled for a format and a weight's shape: its MODE, tile shape,
segment length, chunk and warps (quantize_tiling), the line a result row gives it
(quantize_choice), and quantize's launches worked out once per format, shape and dtype
(quantize_plan)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .checks import cdiv, next_power_of_2
from .codebooks import CODE_IDS, SCALE_DTYPE_IDS
from .launching import key_token
from .spec import QuantSpec

TILE_ELEMS = 4096  # elements of W one program holds at a time
MAX_CHUNK_K = 2048
GROUP_TILE_K = 512  # columns per program for per-group scales: several groups per tile
# Per-group scales: smaller tiles on 2 warps. On an H100, fp16 8192 x 8192 (GB/s the op must move,
# against 2863 for a clone), from 4096 elements on 4 warps: int4 g128 1018 -> 1451 (asymmetric),
# 1051 -> 1752 (symmetric), int4 g32 947 -> 1159; int8 and int2 within 2.5% either way (codes
# identical; swept over tile shapes and 2 to 16 warps with scratch scripts, not committed).
GROUP_TILE_ELEMS = 2048
GROUP_WARPS = 2
# 4- and 2-bit codes on large weights: the same 2048 elements on one warp, 1024 columns a tile.
# On the H200 (kernels/NOTES.md, session 21; fp16 8192^2, us against the tile above): int4 g128
# 58.1 -> 55.0, int4 symmetric g32 56.9 -> 52.9, int2 g128 60.3 -> 55.3, every 4- and 2-bit
# format 2-9% faster, bfloat16 and 28672 x 8192 alike. Not for asymmetric groups under 128
# columns, whose scale+zero pairs are stored group-major (a tile's rows side by side): on 2 rows
# of 1024 columns int4 g32 ran 59.7 -> 67.0, so they keep 512 columns (4 rows; 57.3). Not for
# small weights (at 1024^2, 512 programs, one warp ran 3-7% slower; 4096^2 within 2% either way,
# mostly faster).
SUB_BYTE_GROUP_TILE_K = 1024
SUB_BYTE_GROUP_WARPS = 1
SUB_BYTE_GROUP_MIN_ELEMS = 1 << 23
# 8-bit integer codes take that tile only in groups of 128 columns or more and on weights of 64M
# elements or more (fp8 groups not measured). Session 21's probes (us, 2-warp tile -> one warp,
# 1024 columns; the default record of session 22 agreed, 56.6 -> 55.8 symmetric, asymmetric
# unchanged): int8 g128 fp16 8192^2 asymmetric 56.3 -> 56.3 (55.97 against 56.32 in the other
# probe), symmetric 56.4 -> 55.8 (56.00 against 56.45), bfloat16 69.3 -> 65.2 and 66.5 -> 65.7,
# 28672 x 8192 184.8 -> 178.9 and 179.8 -> 170.3; but 4096^2 19.5 -> 20.1 and 19.7 -> 20.5, and
# groups of 32 slower on one warp at 8192^2 (asymmetric 59.3 -> 64.9 on 512 columns, 84.3 on
# 1024; symmetric 55.4 -> 56.9).
BYTE_GROUP_MIN_ELEMS = 1 << 26
BYTE_GROUP_MIN_SIZE = 128
# Per-group scales: a segment is held as chunks of GROUP_CHUNK columns, or two chunks where it is
# shorter, each thread holding whole chunks of one segment (quantization.quantize_kernel says
# why). On the H200, fp16 8192 x 8192, us against the [BLOCK_N, NG, GROUP] tile it replaced
# (kernels/NOTES.md, session 16): int4 g128 69.1 -> 59.2 (chunks of 16: 61.9, 64: 62.0), int2
# g128 70.0 -> 59.4, int8 g128 59.2 -> 56.9, int4 g32 64.6 -> 59.6 (chunks of 16; 32: 66.8),
# int8 g32 57.1 -> 57.5; codes identical.
GROUP_CHUNK = 32
# On the one-warp tiles of 4- and 2-bit codes and NF4 (below), chunks of 16 columns: since session
# 26 reduces a segment's chunks in the thread before its lanes, a thread then holds half a
# segment of 128 (one scale, one reciprocal: sm_90 SASS of int4 g128's unclamped path 905 -> 814
# a tile, 96 -> 80 registers; int2 g128 910 -> 811, symmetric int4 822 -> 750, int4 g64 1025 ->
# 880, NF4 g64 793 -> 717), where session 16's chunks of 16 had lost with the lanes reduced first.
# 8-bit codes (768 -> 849) and the 2-warp tiles of small weights (int4 g128 at 1024^2: 501 ->
# 685) keep 32. Not yet timed on a GPU (kernels/NOTES.md, session 26).
ONE_WARP_CHUNK = 16
# NF4 (a table lookup an element) on one warp, 1024 elements a program: g64 fp16 78.4 -> 72.9 us
# (the integer formats within 2 us either way of the default tile, so they keep it)
NF4_TILE_ELEMS = 1024
NF4_WARPS = 1
MAX_ROW_TILE_K = 8192  # per-channel scales: rows up to this long are held in one tile


def quantize_tiling(spec: QuantSpec, n: int, k: int) -> tuple[int, int, int, int, int, int]:
    """(MODE, BLOCK_N, BLOCK_K, GROUP, CHUNK, num_warps) of quantize_kernel for a format and an
    [N, K] weight."""
    row_k = max(spec.per_byte, next_power_of_2(k))
    if spec.granularity == "group":
        chunk = min(spec.group_size // 2, GROUP_CHUNK)
        tile_k, elems, warps = GROUP_TILE_K, GROUP_TILE_ELEMS, GROUP_WARPS
        if spec.codebook == "nf4":
            elems, warps = NF4_TILE_ELEMS, NF4_WARPS
            chunk = min(chunk, ONE_WARP_CHUNK)
        elif spec.bits < 8 and n * k >= SUB_BYTE_GROUP_MIN_ELEMS:
            warps = SUB_BYTE_GROUP_WARPS
            chunk = min(chunk, ONE_WARP_CHUNK)
            if spec.symmetric or spec.group_size >= 128:
                tile_k = SUB_BYTE_GROUP_TILE_K
        elif (spec.bits == 8 and spec.codebook == "integer" and spec.group_size >= BYTE_GROUP_MIN_SIZE
              and n * k >= BYTE_GROUP_MIN_ELEMS):
            warps, tile_k = SUB_BYTE_GROUP_WARPS, SUB_BYTE_GROUP_TILE_K
        block_k = max(spec.group_size, min(row_k, tile_k))
        return 2, max(1, elems // block_k), block_k, spec.group_size, chunk, warps
    if spec.granularity == "channel" and row_k <= MAX_ROW_TILE_K:
        # a whole row in one tile: read once, one "group" per row, on 4 warps. On an H200 (fp16
        # 8192 x 8192, once the division had become multiplications; kernels/NOTES.md): int4
        # 69.8 us against 89.1 on the 16 warps it had, int8 69.8 against 74.6 and int2 69.5
        # against 76.5 on 8; fp8 106.4 against 104.8 on 8 (within the noise); 2 rows a program, or
        # 16 and 32 warps, slower for every format.
        return 2, max(1, TILE_ELEMS // row_k), row_k, row_k, row_k, 4
    block_k = min(row_k, MAX_CHUNK_K)
    return (0 if spec.granularity == "tensor" else 1), max(1, TILE_ELEMS // block_k), block_k, block_k, block_k, 4


def quantize_choice(spec: QuantSpec, n: int, k: int) -> str:
    """The launch quantize makes for a format and an [N, K] weight, as the results' kernel_config puts
    it: quantize_kernel's MODE, tile, segment (GROUP), chunk and warps (quantize_tiling). Planned,
    not autotuned, so the same on the GPU and under the interpreter. Per tensor a min/max pass and
    the scale's kernel come first; nf4_dq writes its scales (MODE 2) before its codes (MODE 3)."""
    mode, block_n, block_k, group, chunk, warps = quantize_tiling(spec, n, k)
    tile = f"BLOCK_N={block_n} BLOCK_K={block_k} GROUP={group} CHUNK={chunk} num_warps={warps}"
    if spec.granularity == "tensor":
        return f"min/max pass, then MODE=0 {tile}"
    if spec.double_quant:
        return f"MODE=2 (scales), then MODE=3 (codes) {tile}"
    return f"MODE={mode} {tile}"


@dataclass(frozen=True)
class QuantizePlan:
    """quantize's launches for one format, weight shape, dtype and row stride: what a call would
    otherwise work out again every time (the tiling, the constants, the grid, the signature of
    every argument). Made on the first such call and kept (quantize_plan), as dequantize's plans
    are kept with a weight (dequantization.DequantizePlan).

    packed_cols: the codes' columns; scale_dtype: the dtype the scales are written in (float32
    for nf4_dq, whose codes pass reads them double-quantized); grid: quantize_kernel's, and the
    min/max pass's per tensor; partials: per tensor, the min/max pass's programs (its partial
    minima and maxima), else 0; minmax_constants, qparams_constants: per tensor, the two passes'
    constants; constants: quantize_kernel's (for nf4_dq its scales pass); codes_constants: nf4_dq's
    codes pass (MODE 3), else None.

    token: the plan's share of every launch key (launching.Launcher): the format, the shape, the
    dtype and the row stride fix every argument's signature but w's address. quantize's outputs
    are new from the allocator (16-byte aligned; the zeros of scale+zero pairs 2 bytes past it,
    spec.scale_zero_pairs, on every call alike), and so are nf4_dq's scale codes, chunk scales
    and mean; so a key adds w's alignment only."""

    packed_cols: int
    scale_dtype: torch.dtype
    grid: Callable[[dict[str, Any]], tuple[int, int]]
    partials: int
    minmax_constants: dict[str, Any]
    qparams_constants: dict[str, Any]
    constants: dict[str, Any]
    codes_constants: dict[str, Any] | None
    token: int


@functools.lru_cache(maxsize=1024)
def quantize_plan(spec: QuantSpec, n: int, k: int, dtype: torch.dtype, row_stride: int) -> QuantizePlan:
    """quantize's plan for an [N, K] weight of `dtype` whose rows are `row_stride` elements apart
    (spec.check_shape's error, where the shape does not fit the format, is raised, not kept)."""
    spec.check_shape(n, k)
    mode, block_n, block_k, group, chunk, num_warps = quantize_tiling(spec, n, k)
    blocks = (1 if mode == 1 else cdiv(k, block_k), cdiv(n, block_n))
    per_tensor = spec.granularity == "tensor"
    fmt = dict(BITS=spec.bits, QMIN=spec.qmin, QMAX=spec.qmax, SYMMETRIC=spec.symmetric, CODE=CODE_IDS[spec.codebook],
               GROUP=group, CHUNK=chunk, EVEN=mode != 1 and n % block_n == 0 and k % block_k == 0, BLOCK_N=block_n,
               BLOCK_K=block_k, num_warps=num_warps)
    double_quant = spec.double_quant
    return QuantizePlan(
        packed_cols=spec.packed_cols(k), scale_dtype=torch.float32 if double_quant else dtype,
        grid=lambda meta: blocks, partials=blocks[0] * blocks[1] if per_tensor else 0,
        minmax_constants=dict(BLOCK_N=block_n, BLOCK_K=block_k),
        qparams_constants=dict(QMAX=spec.qmax, SYMMETRIC=spec.symmetric, BLOCK=1024),
        # nf4_dq: its first pass writes the float32 scales only
        constants=dict(fmt, MODE=mode, STORE_CODES=not double_quant),
        codes_constants=(dict(fmt, MODE=3, STORE_CODES=True, SCALE_DTYPE=SCALE_DTYPE_IDS[dtype]) if double_quant
                         else None),
        token=key_token((spec, n, k, dtype, row_stride)))
