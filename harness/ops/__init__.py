"""The op contracts. Each op says which axes apply to it, how to make its inputs (the frozen
records below, handed to every implementation's factory), how to check an output against the
reference, what its rows' error and memory are, and what it moves. Which implementations exist,
and in which role, is the registry's (harness/registry).

The inputs an implementation receives, by op (all on the run's device):
- quantize: WeightInputs(w [N, K] float, spec; own, own_w_hat, own_decode where the implementation
  brings its own format)
- dequantize: CodeInputs(w, q: QuantizedTensor of w in the case's format; own, own_w_hat likewise)
- matmul: MatmulInputs(x [M, K], w [N, K], q, ..., own: the implementation's own prepared
  weights where it declares its own format, else None)
- stack: StackInputs(x, ws: one weight per layer, qs: their QuantizedTensors, ...)
- matmul_w8a8: W8A8Inputs(x, w, w_int8 [N, K] int8, w_scales [N] float32, ..., own)
"""

from .base import FormatOp, Skipped, bytes_memory
from .matmul import MatmulInputs, MatmulOp, StackInputs, StackOp, chain
from .w8a8 import W8A8Inputs, W8A8MatmulOp
from .weight_ops import CodeInputs, DequantizeOp, QuantizeOp, WeightInputs

OPS = {op.name: op for op in (QuantizeOp(), DequantizeOp(), MatmulOp(), StackOp(), W8A8MatmulOp())}

__all__ = ["OPS", "CodeInputs", "FormatOp", "MatmulInputs", "Skipped", "StackInputs", "W8A8Inputs", "WeightInputs",
           "bytes_memory", "chain"]
