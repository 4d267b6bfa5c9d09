"""Compile, on a machine without a GPU, the Triton kernels that quantize, dequantize or qmatmul
would launch for a format and a shape, for the H200's sm_90, and count their SASS instructions.

    python3 scripts/sass_count.py quantize 4 asymmetric group 128
    python3 scripts/sass_count.py dequantize 2 asymmetric channel --dtype bfloat16
    python3 scripts/sass_count.py gemv 4 asymmetric group 128 --config BLOCK_N=16 BLOCK_K=512 SPLIT_K=4 num_warps=4
    python3 scripts/sass_count.py quantize 4 asymmetric group 128 --sass /tmp/q.sass   # the listing too

At a shape like 8192^2 these kernels are bound by the instructions they issue as much as by the
bytes they move (kernels/NOTES.md): a change that takes instructions out of a tile can be judged
here before a GPU is lent, and the GPU then says whether the time followed. Each line gives the
kernel, its registers, its static instruction count, the elements one thread handles (BLOCK_N x
BLOCK_K over the threads) and the most common opcodes. The count is static: a kernel that loops or
branches (quantize keeps a clamped and an unclamped way to store its codes) issues more or fewer;
--sass gives the listing to split by hand.

How: the launch the library would make is captured instead of run (kernels.launching.Launcher),
device checks are skipped, and its arguments become a Triton signature with the specializations
Triton makes on the GPU (16-byte-aligned pointers and integers divisible by 16, integers equal to 1
as constants). Autotuned kernels (gemv, and qmatmul's GEMMs) take their config from --config, or
the first of their list. ptxas and nvdisasm come with Triton. TRITON_INTERPRET must be unset.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float16", "bfloat16", "float32")
MAX_ELEMS = 1 << 30  # a tensor's elements: the weight (and activations) are built on the CPU, 4 GiB in float32


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=("quantize", "dequantize", "gemv", "matmul"))
    ap.add_argument("bits", type=int)
    ap.add_argument("scheme")
    ap.add_argument("granularity")
    ap.add_argument("group_size", type=int, nargs="?")
    ap.add_argument("--dtype", choices=DTYPES, default="float16")
    ap.add_argument("--shape", type=int, nargs=2, default=(8192, 8192), metavar=("N", "K"))
    ap.add_argument("-M", type=int, default=1, help="activation rows (matmul)")
    ap.add_argument("--config", nargs="*", default=[], metavar="NAME=VALUE",
                    help="an autotuned kernel's config (its constants, num_warps, num_stages)")
    ap.add_argument("--sass", type=Path, help="also write the SASS listing here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("sass_count: unset TRITON_INTERPRET (the kernels must be compiled, not interpreted)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.autotuner import Autotuner, Heuristics

    import kernels
    import kernels.quantized_matmul
    from kernels import checks, launching

    type_names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.uint8: "u8",
                  torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.float8_e4m3fn: "fp8e4nv"}
    bad = [item for item in args.config if "=" not in item]
    if bad:
        print(f"sass_count: --config takes NAME=VALUE items, got {bad[0]!r}", file=sys.stderr)
        return 2
    config = {name: _value(v) for name, v in (item.split("=", 1) for item in args.config)}
    try:
        spec = kernels.QuantSpec(args.bits, args.scheme, args.granularity, args.group_size)
        spec.check_shape(*args.shape)
    except (TypeError, ValueError) as e:
        print(f"sass_count: {e}", file=sys.stderr)
        return 2
    if min(args.shape) < 1 or args.M < 1:
        print(f"sass_count: --shape and -M take positive sizes, got {list(args.shape)} and {args.M}", file=sys.stderr)
        return 2
    n, k = args.shape
    if max(n, args.M) * k > MAX_ELEMS:
        # the weight and the activations are built on this CPU, to be quantized and planned for
        print(f"sass_count: an {max(n, args.M)} x {k} tensor is more than this script builds on the CPU "
              f"(2^{MAX_ELEMS.bit_length() - 1} elements at most)", file=sys.stderr)
        return 2
    captured = []

    def capture(self, grid, launch_args, constants, key=None, tensors=None):
        captured.append((self.tuned, tensors() if tensors is not None else launch_args, dict(constants)))

    checks.check_device = lambda name, t: None  # the tensors stay on the CPU; nothing is launched
    launching.Launcher.__call__ = capture
    kernels.quantized_matmul.INTERPRETED = False

    dtype = getattr(torch, args.dtype)
    w = torch.randn(n, k, dtype=dtype)
    if args.op == "quantize":
        kernels.quantize(w, spec)
        launches = list(captured)
    else:
        # the reference's weight: real scales, so that dequantize's plan sees whether its values
        # fit the dtype (a weight quantized by the captured, never-run launch would hold garbage)
        q = kernels.quantize_ref(w, spec)
        if args.op == "dequantize":
            kernels.dequantize(q, dtype)
        else:
            kernels.qmatmul(torch.randn(1 if args.op == "gemv" else args.M, k, dtype=dtype), q)
        launches = list(captured)
    target = GPUTarget("cuda", 90, 32)
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for tuned, launch_args, constants in launches:
        options = {"num_warps": 4, "num_stages": 3}  # Triton's defaults, where a launch sets neither
        options.update({o: constants.pop(o) for o in ("num_warps", "num_stages") if o in constants})
        chain = tuned
        heuristics = []
        while isinstance(chain, (Autotuner, Heuristics)):
            if isinstance(chain, Autotuner):
                chosen = chain.configs[0]
                constants.update(chosen.kwargs)
                options.update(num_warps=chosen.num_warps, num_stages=chosen.num_stages)
            else:
                heuristics.append(chain)
            chain = chain.fn
        options.update({o: config[o] for o in ("num_warps", "num_stages", "maxnreg") if o in config})
        constants.update({c: v for c, v in config.items() if c not in ("num_warps", "num_stages", "maxnreg")})
        jit = chain
        names = list(jit.arg_names)
        named = dict(zip(names, launch_args))
        for h in heuristics:
            for name, rule in h.values.items():
                constants.setdefault(name, rule({**named, **constants}))
        signature, constexprs, attrs = {}, {}, {}
        for i, name in enumerate(names):
            param = jit.params[i]
            if name in constants or param.is_constexpr:
                signature[name] = "constexpr"
                constexprs[name] = constants.get(name, param.default)
                continue
            value = named[name]
            if isinstance(value, torch.Tensor):
                signature[name] = "*" + type_names[value.dtype]
                if value.data_ptr() % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
            elif value is None:
                signature[name] = "constexpr"
                constexprs[name] = None
            elif value == 1:  # Triton specializes an integer argument equal to 1 as a constant
                signature[name] = "constexpr"
                constexprs[name] = 1
            else:
                signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        compiled = triton.compile(ASTSource(jit, signature, constexprs, attrs), target=target, options=options)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            sass = subprocess.run([bin_dir / "nvdisasm", "-c", cubin.name], capture_output=True, text=True,
                                  check=True).stdout
            usage = subprocess.run([bin_dir / "cuobjdump", "--dump-resource-usage", cubin.name], capture_output=True,
                                   text=True, check=True).stdout
        ops = re.findall(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass, re.M)
        regs = re.search(r"REG:(\d+)", usage)
        threads = options["num_warps"] * 32
        block = constexprs.get("BLOCK_N", 1) * constexprs.get("BLOCK_K", 1)
        per_thread = block / threads
        common = ", ".join(f"{op} {count}" for op, count in collections.Counter(ops).most_common(12))
        tile = " ".join(f"{c}={constexprs[c]}" for c in ("MODE", "BLOCK_N", "BLOCK_K", "GROUP", "CHUNK", "SPLIT_K")
                        if c in constexprs)
        print(f"{jit.__name__} [{tile} num_warps={options['num_warps']}]: {regs.group(1) if regs else '?'} registers, "
              f"{len(ops)} instructions, {per_thread:g} elements a thread ({len(ops) / per_thread:.2f} an element)")
        print(f"    {common}")
        if args.sass:
            with open(args.sass, "a") as out:
                out.write(f"// {jit.__name__} {tile}\n{sass}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
