"""bitsandbytes as a peer (placeholder: filled in by issue 14)."""

from __future__ import annotations

from .records import Impl

BITSANDBYTES_IMPLS: list[Impl] = []
