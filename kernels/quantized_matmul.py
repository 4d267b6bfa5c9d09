"""Weight-only quantized matmul with the dequantization fused in: y = x @ dequantize(Wq)^T.

W8A16, W4A16 and W2A16 (any scheme and granularity of spec.py) with float32, float16 or bfloat16
activations and float32 accumulation. The codes are read in the packed layout that ``quantize``
writes ([N, ceil(K * bits / 8)] uint8, packed along K, element k of a row in byte k // (8 // bits)
at bit (k % (8 // bits)) * bits) and are never expanded in memory: each program unpacks and scales
its weight tile in registers.

Two kernels, chosen by M as the fast libraries do:
- ``qgemv_kernel`` for M = 1, on the CUDA cores (a tl.dot padded to 16 rows wastes most of its
  work). Each program streams BLOCK_N weight rows over all of K, reading the codes as int32 words
  where it can, and keeps one float32 partial sum per word it holds, reduced once after the loop.
- ``qgemm_kernel`` otherwise: a tiled tl.dot GEMM with the dequantization inside the K loop,
  computed transposed (y^T = W_hat x^T) so that the dequantized weight, which lives in registers,
  is the dot's left operand (Hopper's wgmma reads its left operand from registers, its right one
  from shared memory, where the pipelined x tile already is). For M <= SPLIT_MAX_M there are too
  few output tiles to fill the GPU, so K is split too: SPLIT_K programs share a tile, add their
  partial sums atomically into a float32 buffer, and the last to finish writes the tile.
Both are autotuned (the GEMM keyed on the M bucket, N, K and the format); configs that cannot
apply are pruned. Under the interpreter one small config is used instead.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.testing
import triton.language as tl

from .checks import check_matrix, check_same_device, interpreting
from .dequantization import GRANULARITY_IDS, dequant_tile, unpack_tile
from .references import check_quantized, dequantize_ref
from .spec import QuantizedTensor



@triton.jit
def row_params(scales_ptr, zeros_ptr, rows, N, stride_sn, col, SYMMETRIC: tl.constexpr):
    """float32 scale and zero [len(rows)] of column `col` of the scale matrix (zero 0 if symmetric)."""
    ok = rows < N
    scale = tl.load(scales_ptr + rows * stride_sn + col, mask=ok, other=1.0).to(tl.float32)
    if SYMMETRIC:
        zero = tl.zeros_like(scale)
    else:
        zero = tl.load(zeros_ptr + rows * stride_sn + col, mask=ok, other=0.0).to(tl.float32)
    return scale, zero


@triton.jit
def finish_tile(y_ptr, partials_ptr, tickets_ptr, tile, acc, rows_m, rows_n, M, N, stride_ym,
                SPLIT_K: tl.constexpr):
    """Write acc[i, j] at y[rows_m[i], rows_n[j]]; with SPLIT_K > 1, acc is one of SPLIT_K partial
    sums of the tile: it is added into `partials` (float32, laid out like y, zero between calls)
    and the last of the tile's programs to arrive (counted in tickets[tile], zero between calls)
    writes the total to y and sets both back to zero. One launch, no buffer to clear first."""
    offsets = rows_m[:, None] * stride_ym + rows_n[None, :]
    mask = (rows_m[:, None] < M) & (rows_n[None, :] < N)
    if SPLIT_K == 1:
        tl.store(y_ptr + offsets, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(partials_ptr + offsets, acc, mask=mask, sem="relaxed")
        tl.debug_barrier()  # every thread's partial sum is in before the ticket is taken
        ticket = tl.atomic_add(tickets_ptr + tile, 1, sem="acq_rel")
        if ticket == SPLIT_K - 1:
            total = tl.load(partials_ptr + offsets, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + offsets, total.to(y_ptr.dtype.element_ty), mask=mask)
            tl.store(partials_ptr + offsets, tl.zeros_like(total), mask=mask)
            tl.atomic_xchg(tickets_ptr + tile, 0)


@triton.jit
def qgemv_kernel(x_ptr, units_ptr, scales_ptr, zeros_ptr, y_ptr, N, K, stride_un, stride_sn, row_units,
                 BITS: tl.constexpr, FIELDS: tl.constexpr, OFFSET: tl.constexpr, SYMMETRIC: tl.constexpr,
                 GRANULARITY: tl.constexpr, GROUP: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr):
    """y[1, N] = x[1, K] @ W_hat^T. Grid: (cdiv(N, BLOCK_N),).

    The codes are read as units of FIELDS bit fields: the packed bytes of ``quantize`` viewed as
    int32 words (FIELDS = 32 // BITS, when a row's bytes are a whole number of aligned words) or
    as uint8 (FIELDS = 8 // BITS); field j of unit u holds column u * FIELDS + j either way, since
    the bytes are little endian. row_units: units per row; stride_un in units. Scales and zeros as
    in dequant_tile. BLOCK_K is a multiple of FIELDS; with per-group scales BLOCK_K and GROUP are
    powers of two. EVEN_N / EVEN_K: N / K are multiples of BLOCK_N / BLOCK_K (no masks needed).

    The tile is held as [BLOCK_N, segments, units per segment], a segment being the columns that
    share one scale (a group, or the whole tile), so a scale broadcasts without a reshape. Each
    field is multiplied by the activations of its own columns (a strided read of x, which is
    small and stays in cache), so the fields are never interleaved, and each program keeps one
    float32 partial sum per unit it holds, reduced once after the loop. Per-channel and
    per-tensor scales are applied after the loop: s (x . (q - offset)) + z sum(x).
    """
    FIELD_MASK: tl.constexpr = (1 << BITS) - 1
    SEG: tl.constexpr = min(GROUP, BLOCK_K) if GRANULARITY == 2 else BLOCK_K
    NSEG: tl.constexpr = BLOCK_K // SEG
    SEG_UNITS: tl.constexpr = SEG // FIELDS
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    segs = tl.arange(0, NSEG)
    tile_units = segs[:, None] * SEG_UNITS + tl.arange(0, SEG_UNITS)[None, :]  # [NSEG, SEG_UNITS]
    acc = tl.zeros((BLOCK_N, NSEG, SEG_UNITS), tl.float32)
    x_sum = tl.zeros((NSEG, SEG_UNITS), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        unit_cols = k0 // FIELDS + tile_units
        unit_ptrs = units_ptr + rows[:, None, None] * stride_un + unit_cols[None, :, :]
        if EVEN_N and EVEN_K:
            packed = tl.load(unit_ptrs)
        else:
            packed = tl.load(unit_ptrs, mask=row_ok[:, None, None] & (unit_cols < row_units)[None, :, :], other=0)
        packed = packed.to(tl.int32)
        if GRANULARITY == 2:
            seg_cols = k0 + segs * SEG
            s_off = rows[:, None] * stride_sn + (seg_cols // GROUP)[None, :]
            s_ok = row_ok[:, None] & (seg_cols < K)[None, :]
            scale = tl.load(scales_ptr + s_off, mask=s_ok, other=1.0).to(tl.float32)[:, :, None]
            if SYMMETRIC:
                zero = 0.0
            else:
                zero = tl.load(zeros_ptr + s_off, mask=s_ok, other=0.0).to(tl.float32)[:, :, None]
        for j in tl.static_range(FIELDS):
            field = (packed >> (j * BITS)) & FIELD_MASK
            # int -> float by the exponent trick (see unpack_tile)
            q = (field | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + OFFSET)
            cols = k0 + tile_units * FIELDS + j
            if EVEN_K:
                xv = tl.load(x_ptr + cols).to(tl.float32)
            else:
                xv = tl.load(x_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
            if GRANULARITY == 2:
                acc += xv[None, :, :] * (q * scale + zero)
            else:
                acc += xv[None, :, :] * q
                if not SYMMETRIC:
                    x_sum += xv
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    if GRANULARITY != 2:
        scale, zero = row_params(scales_ptr, zeros_ptr, rows * (GRANULARITY == 1), N, stride_sn, 0, SYMMETRIC)
        y = y * scale + tl.sum(tl.sum(x_sum, axis=1), axis=0) * zero
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def qgemm_kernel(x_ptr, codes_ptr, scales_ptr, zeros_ptr, y_ptr, partials_ptr, tickets_ptr, M, N, K,
                 stride_xm, stride_cn, stride_sn, stride_ym, M_BUCKET,
                 BITS: tl.constexpr, OFFSET: tl.constexpr, SYMMETRIC: tl.constexpr,
                 GRANULARITY: tl.constexpr, GROUP: tl.constexpr, IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr):
    """y[M, N] = x[M, K] @ W_hat^T with tl.dot, computed as y^T tiles [BLOCK_N, BLOCK_M] = W_hat x^T.

    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), SPLIT_K), programs ordered in GROUP_M-row bands so
    that neighbouring programs share weight tiles in L2. partials and tickets: see finish_tile
    (unused when SPLIT_K is 1).
    Each weight tile is dequantized to x's dtype inside the K loop, except with symmetric
    per-channel or per-tensor scales: then the integer codes (exact in fp16 and bf16) go into the
    dot and the scale is applied once, in the epilogue. (The asymmetric form, s (q . x) + z sum(x)
    with sum(x) taken from the x tile that also feeds the dot, gave wrong outputs, relative error
    near 1, on an H100 with Triton 3.6 for some tile shapes (e.g. 128 x 128 x 64, 8 warps, 3
    stages) and right ones for others; not isolated further, so the zero goes into the tile.)
    IEEE: both operands in float32, multiplied without TF32 (float32 activations; bfloat16 under
    the interpreter, whose dot reads bfloat16's raw bits as integers).
    """
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_n = tl.cdiv(N, BLOCK_N)
    # GROUP_M-row bands, column-major within a band (Triton's grouped ordering)
    pid_m, pid_n = tl.swizzle2d(pid // num_n, pid % num_n, tl.cdiv(M, BLOCK_M), num_n, GROUP_M)
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = pid_k * k_per_split
    k_hi = min(K, k_lo + k_per_split)

    rows_x = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_w = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # symmetric per-channel or per-tensor: integer codes in the dot, one scale per output column
    EPILOGUE_SCALE: tl.constexpr = SYMMETRIC and GRANULARITY != 2
    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        # x^T tile [BLOCK_K, BLOCK_M], read straight from row-major x
        xt = tl.load(x_ptr + rows_x[None, :] * stride_xm + cols[:, None],
                     mask=(rows_x[None, :] < M) & (cols[:, None] < K), other=0.0)
        # columns past K meet zeros of x; their weights are finite (codes read as 0, scales as 1)
        if EPILOGUE_SCALE:
            w = unpack_tile(codes_ptr, rows_w, k0, N, K, stride_cn, BITS, OFFSET, BLOCK_N, BLOCK_K)
        else:
            w = dequant_tile(codes_ptr, scales_ptr, zeros_ptr, rows_w, k0, N, K, stride_cn, stride_sn,
                             BITS, OFFSET, SYMMETRIC, GRANULARITY, GROUP, BLOCK_N, BLOCK_K)
        if IEEE:
            acc = tl.dot(w, xt.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(w.to(xt.dtype), xt, acc)
    if EPILOGUE_SCALE:
        scale, _ = row_params(scales_ptr, zeros_ptr, rows_w * (GRANULARITY == 1), N, stride_sn, 0, True)
        acc = acc * scale[:, None]
    finish_tile(y_ptr, partials_ptr, tickets_ptr, pid, tl.trans(acc), rows_x, rows_w, M, N, stride_ym, SPLIT_K)


def _prune(configs, named_args, **kwargs):
    """Drop configs with tiles wider than the problem; keep the narrowest if nothing else is left."""
    n, k = named_args["N"], named_args["K"]
    kept = [c for c in configs
            if c.kwargs["BLOCK_K"] <= max(32, triton.next_power_of_2(k))
            and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(n))]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_K"])]


def _prune_gemm(configs, named_args, **kwargs):
    """As _prune, and x tiles no taller than the M bucket (a 256-row tile at M = 16 is mostly padding)."""
    bucket = named_args["M_BUCKET"]
    kept = [c for c in _prune(configs, named_args) if c.kwargs["BLOCK_M"] <= max(16, bucket)]
    return kept or _prune(configs, named_args)[:1]


# (BLOCK_N, BLOCK_K, num_warps)
GEMV_TILES = [(8, 512, 4), (16, 512, 4), (16, 256, 4), (8, 256, 2), (8, 1024, 4), (32, 512, 8), (4, 1024, 2)]
GEMV_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w) for bn, bk, w in GEMV_TILES]
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
# On an H100 at M = 4096, N = K = 8192 (int4): BLOCK_K 128 ran 1.3x faster than 64 (1.87 ms
# against 2.45 ms per channel, 2.10 against 2.70 per group).
GEMM_TILES = [(128, 128, 128, 4, 3), (256, 128, 128, 8, 3), (128, 128, 128, 8, 3), (256, 128, 64, 8, 3),
              (128, 128, 64, 8, 3), (128, 64, 128, 4, 3), (64, 128, 64, 4, 4), (64, 64, 128, 4, 4)]
GEMM_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SPLIT_K": 1},
                              num_warps=w, num_stages=s) for bm, bn, bk, w, s in GEMM_TILES]


# Small M (up to SPLIT_MAX_M): few output tiles, so K is split too.
# (BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages)
# Every one splits K: measured on an H100 at N = K = 8192, unsplit tiles were 1.5-2x slower here.
SPLIT_TILES = [(16, 64, 256, 4, 4, 3), (16, 64, 128, 4, 4, 4), (16, 64, 256, 8, 4, 3), (32, 64, 256, 4, 4, 3),
               (32, 64, 128, 2, 4, 4), (64, 64, 128, 2, 4, 4), (64, 64, 256, 4, 4, 3)]
SPLIT_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SPLIT_K": sk},
                               num_warps=w, num_stages=s)
                 for bm, bn, bk, sk, w, s in SPLIT_TILES]
SPLIT_MAX_M = 64
KEY = ["M_BUCKET", "N", "K", "BITS", "SYMMETRIC", "GRANULARITY", "GROUP"]
# Short autotuning samples: a sweep tunes once per M bucket, shape and format, and the harness
# times the chosen config properly afterwards.
_tune_bench = functools.partial(triton.testing.do_bench, warmup=5, rep=25)
qgemv_tuned = triton.autotune(GEMV_CONFIGS, key=["N", "K", "BITS", "FIELDS", "SYMMETRIC", "GRANULARITY", "GROUP"],
                              prune_configs_by={"early_config_prune": _prune}, do_bench=_tune_bench)(
    triton.heuristics({"EVEN_N": lambda a: a["N"] % a["BLOCK_N"] == 0,
                       "EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})(qgemv_kernel))
qgemm_tuned = triton.autotune(GEMM_CONFIGS, key=KEY + ["IEEE"], prune_configs_by={"early_config_prune": _prune_gemm},
                              do_bench=_tune_bench)(qgemm_kernel)
qgemm_split_tuned = triton.autotune(SPLIT_CONFIGS, key=KEY + ["IEEE"],
                                    prune_configs_by={"early_config_prune": _prune_gemm},
                                    do_bench=_tune_bench)(qgemm_kernel)


def _m_bucket(m: int) -> int:
    return min(triton.next_power_of_2(m), 4096)


def launch_args(x: torch.Tensor, q: QuantizedTensor, y: torch.Tensor, partials: torch.Tensor,
                tickets: torch.Tensor) -> tuple[tuple, dict]:
    """Positional arguments and format constants of qgemm_kernel."""
    n, k = q.shape
    m = x.shape[0]
    spec = q.spec
    zeros = q.scales if q.zeros is None else q.zeros
    args = (x, q.codes, q.scales, zeros, y, partials, tickets, m, n, k, x.stride(0), q.codes.stride(0),
            q.scales.stride(0), y.stride(0), _m_bucket(m))
    fmt = dict(BITS=spec.bits, OFFSET=spec.offset, SYMMETRIC=spec.symmetric,
               GRANULARITY=GRANULARITY_IDS[spec.granularity], GROUP=spec.group_size or 1)
    return args, fmt


def code_units(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Sub-byte codes as int32 words where each row is a whole number of 4-byte aligned words
    (fewer, wider loads), else as they are (uint8). 8-bit codes stay bytes: on an H100 the GEMV
    ran 74 us over words at N = K = 8192, where an earlier
    form of it over bytes ran 44 us."""
    if bits < 8 and codes.shape[1] % 4 == 0 and codes.stride(0) % 4 == 0 and codes.data_ptr() % 4 == 0:
        return codes.view(torch.int32)
    return codes


def _gemv(x: torch.Tensor, q: QuantizedTensor, y: torch.Tensor) -> None:
    n, k = q.shape
    spec = q.spec
    units = code_units(q.codes, spec.bits)
    args = (x, units, q.scales, q.scales if q.zeros is None else q.zeros, y, n, k, units.stride(0),
            q.scales.stride(0), units.shape[1])
    fmt = dict(BITS=spec.bits, FIELDS=units.element_size() * spec.per_byte, OFFSET=spec.offset,
               SYMMETRIC=spec.symmetric, GRANULARITY=GRANULARITY_IDS[spec.granularity], GROUP=spec.group_size or 1)
    if interpreting():
        qgemv_kernel[(triton.cdiv(n, 16),)](*args, **fmt, BLOCK_N=16, BLOCK_K=64, EVEN_N=False, EVEN_K=False)
    else:
        qgemv_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **fmt)


def qmatmul_path(m: int) -> str:
    """The kernel qmatmul runs for M rows of activations: the GEMV at M = 1, the split-K GEMM up to
    SPLIT_MAX_M, the GEMM above."""
    return "gemv" if m == 1 else "split-k gemm" if m <= SPLIT_MAX_M else "gemm"


def qmatmul(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """y[M, N] = x[M, K] @ dequantize(q)^T in x's dtype, the dequantization fused into the matmul.

    x: float32/float16/bfloat16 [M, K], unit stride along K; q: a QuantizedTensor of W [N, K]
    (codes packed along K as written by ``quantize``). float32 x is multiplied in full float32
    (no TF32).
    """
    check_matrix("x", x)
    check_quantized(q, on_kernel_device=True)
    check_same_device(x=x, codes=q.codes)
    n, k = q.shape
    m = x.shape[0]
    if x.shape[1] != k:
        raise ValueError(f"x must be [M, K] with K = {k} (the weight's K), got {list(x.shape)}")
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    path = qmatmul_path(m)
    if path == "gemv":
        _gemv(x, q, y)
        return y
    ieee = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and interpreting())
    split = path == "split-k gemm"
    # tiles are at least 16 x 32, which bounds the number of tickets
    partials, tickets = _split_workspace(x.device, m * n, triton.cdiv(m, 16) * triton.cdiv(n, 32)) if split else (y, y)
    args, fmt = launch_args(x, q, y, partials, tickets)
    if interpreting():
        qgemm_kernel[(triton.cdiv(m, 16) * triton.cdiv(n, 32), 2 if split else 1)](
            *args, **fmt, IEEE=ieee, BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=4, SPLIT_K=2 if split else 1)
    else:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])
        (qgemm_split_tuned if split else qgemm_tuned)[grid](*args, **fmt, IEEE=ieee)
    return y


_workspaces: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _split_workspace(device: torch.device, partial_elems: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-K GEMM's float32 partial sums and per-tile tickets on `device`: zero between
    calls (the kernel clears what it used), kept across calls and grown when too small. Shared by
    every call on the device, so concurrent split-K calls on different streams are not supported."""
    partials, tickets = _workspaces.get(device, (None, None))
    if partials is None or partials.numel() < partial_elems or tickets.numel() < tiles:
        partials = torch.zeros(max(partial_elems, 1 << 16), dtype=torch.float32, device=device)
        tickets = torch.zeros(max(tiles, 1 << 12), dtype=torch.int32, device=device)
        _workspaces[device] = (partials, tickets)
    return partials, tickets


def qmatmul_ref(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """PyTorch reference with the same contract: the seed notebook's forward pass, dequantize with
    the reference, then matmul (x @ W_hat^T), in x's dtype."""
    check_matrix("x", x, on_kernel_device=False)
    if x.shape[1] != q.shape[1]:
        raise ValueError(f"x must be [M, K] with K = {q.shape[1]} (the weight's K), got {list(x.shape)}")
    return torch.matmul(x, dequantize_ref(q, x.dtype).t())
