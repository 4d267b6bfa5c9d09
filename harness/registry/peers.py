"""The libraries users pick instead of the project's kernels, as built-in PEER records: each
optional (a missing package gives `skipped` rows naming it), each on its own weight format where it
quantizes the weights its own way. One module per library; this one only lists them."""

from __future__ import annotations

from .bitsandbytes_peers import BITSANDBYTES_IMPLS
from .gemlite_peers import GEMLITE_IMPLS
from .torchao_peers import TORCHAO_IMPLS

PEER_IMPLS = [*BITSANDBYTES_IMPLS, *TORCHAO_IMPLS, *GEMLITE_IMPLS]
