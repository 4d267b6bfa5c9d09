"""Packing of unsigned sub-byte fields into uint8 along K (PyTorch; the layout is in spec.py)."""

from __future__ import annotations

import torch


def pack_fields(fields: torch.Tensor, bits: int) -> torch.Tensor:
    """[N, K] integer fields in [0, 2**bits) -> [N, ceil(K * bits / 8)] uint8, element k of a row at
    byte k // (8 // bits), bit offset (k % (8 // bits)) * bits."""
    per_byte = 8 // bits
    n, k = fields.shape
    pad = (-k) % per_byte
    f = torch.nn.functional.pad(fields.to(torch.int32), (0, pad))
    f = f.view(n, -1, per_byte)
    shifts = torch.arange(per_byte, device=f.device, dtype=torch.int32) * bits
    return (f << shifts).sum(dim=-1).to(torch.uint8)


def unpack_fields(codes: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of pack_fields: [N, ceil(K * bits / 8)] uint8 -> [N, K] int32 fields."""
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, device=codes.device, dtype=torch.int32) * bits
    f = (codes.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return f.reshape(codes.shape[0], -1)[:, :k]
