"""Split-K: several programs share one output tile, each summing part of K. Their partial sums
meet in a float32 workspace; the last program of a tile to finish writes it and clears what it
used, so a call is one launch with no buffer to zero first."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


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


_workspaces: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
_addresses: dict[torch.device, tuple[int, int, int, int]] = {}  # partials, tickets: address, length


def split_workspace(device: torch.device, partial_elems: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-K kernels' float32 partial sums and per-tile tickets on `device`: zero between
    calls (the kernel clears what it used), kept across calls and grown when too small. Shared by
    every call on the device, so concurrent split-K calls on different streams are not supported."""
    partials, tickets = _workspaces.get(device, (None, None))
    if partials is None or partials.numel() < partial_elems or tickets.numel() < tiles:
        partials = torch.zeros(max(partial_elems, 1 << 16), dtype=torch.float32, device=device)
        tickets = torch.zeros(max(tiles, 1 << 12), dtype=torch.int32, device=device)
        _workspaces[device] = (partials, tickets)
        _addresses[device] = (partials.data_ptr(), partials.numel(), tickets.data_ptr(), tickets.numel())
    return partials, tickets


def split_workspace_addresses(device: torch.device, partial_elems: int, tiles: int) -> tuple[int, int]:
    """split_workspace's two tensors as their addresses, which a direct launch takes as ints
    (launching.Launcher: a tensor costs it a data_ptr() call and a driver query each), valid while
    the workspace is kept: until it is grown, when they are found again."""
    kept = _addresses.get(device)
    if kept is None or kept[1] < partial_elems or kept[3] < tiles:
        split_workspace(device, partial_elems, tiles)
        kept = _addresses[device]
    return kept[0], kept[2]
