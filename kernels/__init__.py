"""Triton quantization kernels, each beside its PyTorch reference (``op`` and ``op_ref``).

The format lives in ``spec`` and needs only torch; the kernel modules import Triton, so they load
on first use (PEP 562). That lets the harness read a config, and decide whether Triton must run
through its interpreter, before Triton is imported.
"""

from importlib import import_module

from .packing import pack_fields, unpack_fields
from .spec import (BITS, FLOAT_DTYPES, GRANULARITIES, GROUP_SIZES, INTEGER_SCHEMES, SCHEMES, QuantizedTensor, QuantSpec,
                   spec_exists)

_LAZY = {
    "quantize": ".quantization", "quantize_ref": ".references", "quantize_choice": ".quantize_tiles",
    "dequantize": ".dequantization", "dequantize_ref": ".references", "dequantize_choice": ".dequantization",
    "qmatmul": ".quantized_matmul", "qmatmul_ref": ".quantized_matmul", "qmatmul_path": ".quantized_matmul",
    "qmatmul_route": ".quantized_matmul",
    "qmatmul_config": ".quantized_matmul",
    "w8a8_matmul": ".w8a8", "w8a8_matmul_ref": ".w8a8", "quantize_tokens": ".w8a8",
    "quantize_tokens_ref": ".w8a8", "pack_weights": ".w8a8",
}

__all__ = [
    "BITS", "FLOAT_DTYPES", "GRANULARITIES", "GROUP_SIZES", "INTEGER_SCHEMES", "SCHEMES", "QuantSpec", "QuantizedTensor",
    "spec_exists",
    "pack_fields", "unpack_fields", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        # kept in the package's namespace, where the next lookup finds it without calling this
        # again: `kernels.qmatmul(x, q)` paid ~1.5 us of import_module a call on the host before
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
