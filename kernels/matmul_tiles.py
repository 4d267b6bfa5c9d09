"""The autotuning spaces of the quantized matmul's kernels (quantized_matmul.py): the tiles each
of the GEMV, the GEMM and the split-K GEMM tries, and the pruning of tiles that cannot apply."""

from __future__ import annotations

import triton


def prune(configs, named_args, **kwargs):
    """Drop configs with tiles wider than the problem; keep the narrowest if nothing else is left."""
    n, k = named_args["N"], named_args["K"]
    kept = [c for c in configs
            if c.kwargs["BLOCK_K"] <= max(32, triton.next_power_of_2(k))
            and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(n))]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_K"])]


def prune_gemm(configs, named_args, **kwargs):
    """As prune, and x tiles no taller than the M bucket (a 256-row tile at M = 16 is mostly padding)."""
    bucket = named_args["M_BUCKET"]
    kept = [c for c in prune(configs, named_args) if c.kwargs["BLOCK_M"] <= max(16, bucket)]
    return kept or prune(configs, named_args)[:1]


# (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, STAGES). STAGES > 1: the next tiles' loads issued through
# shared memory before this one is reduced. Chosen on an H200 (kernels/NOTES.md, session 13) from
# 35 tiles timed on 10 weights (int4 g128 asymmetric at 4096^2, 8192^2, 28672 x 8192; per channel,
# symmetric g128, NF4 g64 at two shapes, int2 g64, int8 per channel): the first nine are, greedily,
# the set whose best is within 0.1% of the best of all 35 on each; the other five, of the earlier
# set, are kept for shapes the probe did not cover (small N among them).
# Splitting K 16 to 32 ways is what the earlier set lacked: 8192^2 int4 g128 bfloat16 29.2 -> 25.1 us on
# (128, 128, 16, 2, 1), 24.8 with the activations read a word at a time (unit_activations.py).
GEMV_TILES = [(16, 512, 1, 4, 3), (64, 256, 8, 2, 3), (128, 128, 16, 2, 1), (128, 128, 16, 2, 2), (32, 512, 1, 8, 1),
              (64, 256, 4, 8, 1), (256, 128, 32, 4, 1), (256, 256, 8, 8, 1), (128, 256, 4, 8, 1),
              (4, 1024, 1, 2, 1), (8, 512, 1, 4, 1), (16, 512, 1, 4, 1), (32, 256, 2, 4, 1), (64, 256, 8, 2, 1)]
GEMV_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "STAGES": st}, num_warps=w)
                for bn, bk, sk, w, st in GEMV_TILES]
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
# (64, 128, 128, 4, 4, 4) added on an H200 (session 14): NF4 g64 at M = 64 61.6 us, 64.0 on the
# next best. The two splitting K 2 ways (session 17): the best of 16 tiles for int4 g128 float16
# at M = 16 and 64 once the scales were pipelined (30.1 and 46.8 us, against 30.7 and 49.8).
# The last four run on 2 warps, where Triton multiplies with mma.sync instead of Hopper's wgmma,
# which is issued by 4 warps together and which Triton waits for after each dot whose weight
# operand comes from registers (session 18, 8192^2 float16 at M = 16, best 4-warp tile -> best
# 2-warp one: int4 g128 30.1 -> 25.8 us, bfloat16 30.1 -> 25.9, per channel 28.3 -> 26.0; at
# M = 64 no 2-warp tile came within 25% of the 4-warp ones; with wgmma switched off for the
# process (DISABLE_MMA_V3=1), mma.sync on 4 or 8 warps lost at M = 64, 256 and 1024).
SPLIT_TILES = [(16, 64, 256, 4, 4, 3), (16, 64, 128, 4, 4, 4), (16, 64, 256, 8, 4, 3), (32, 64, 256, 4, 4, 3),
               (32, 64, 128, 2, 4, 4), (64, 64, 128, 2, 4, 4), (64, 64, 256, 4, 4, 3), (64, 128, 128, 4, 4, 4),
               (16, 64, 256, 2, 4, 3), (64, 64, 256, 2, 4, 3),
               (16, 64, 256, 4, 2, 3), (16, 64, 256, 8, 2, 3), (16, 32, 256, 2, 2, 3), (16, 32, 128, 8, 2, 4)]
SPLIT_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SPLIT_K": sk},
                               num_warps=w, num_stages=s)
                 for bm, bn, bk, sk, w, s in SPLIT_TILES]
SPLIT_MAX_M = 64
