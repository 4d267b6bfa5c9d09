"""NF4's decode through its 16-entry table (exact_math.lookup, dequantization.nf4_word_levels): the
8 fields of an int32 word, every byte value at every position, against the level table; through
dequantize (bytes read as they are) against the reference; through the GEMV (int32 words, and
bytes) against float64. The same path runs under the interpreter and on the GPU (with
QUANTBENCH_TEST_DEVICE=cuda)."""

import pytest
import torch
import triton
import triton.language as tl

from quantbench.kernels import QuantSpec, dequantize, dequantize_ref, qmatmul, quantize
from quantbench.kernels.dequantization import nf4_word_levels
from quantbench.kernels.spec import NF4_LEVELS, QuantizedTensor


def every_byte_words(count: int, seed: int = 0) -> torch.Tensor:
    """int32 words [count] (a multiple of 1024): in each run of 1024, word 256 p + b holds byte b
    at byte position p, its other bytes random."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(0, 256, (count, 4), generator=g, dtype=torch.int64)
    index = torch.arange(count) % 1024
    words[torch.arange(count), index // 256] = index % 256
    return words.to(torch.uint8).view(torch.int32).reshape(count)


@triton.jit
def word_levels_kernel(words_ptr, table_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = nf4_word_levels(tl.load(words_ptr + offs), table_ptr)
    for j in tl.static_range(8):
        tl.store(out_ptr + offs * 8 + j, v[j])


def test_nf4_word_levels_give_every_level_at_every_field(device):
    words = every_byte_words(2048).to(device)
    out = torch.empty(words.numel() * 8, dtype=torch.float32, device=device)
    table = torch.tensor(NF4_LEVELS, dtype=torch.float32, device=device)
    word_levels_kernel[(words.numel() // 256,)](words, table, out, BLOCK=256)
    w = words.cpu().view(torch.uint8).to(torch.int64)
    fields = torch.stack([w & 15, w >> 4], dim=-1).reshape(-1)  # field 2i: byte i's low nibble
    assert torch.equal(out.cpu(), torch.tensor(NF4_LEVELS, dtype=torch.float32)[fields])


@pytest.mark.parametrize("k", [1024, 96])  # whole tiles; a tile longer than the row (masked bytes)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nf4_dequantize_equals_the_reference(k, out_dtype, device):
    n, spec = 64, QuantSpec(4, "nf4", "group", 32)
    codes = every_byte_words(8192).view(torch.uint8)[: n * k // 2].reshape(n, k // 2)  # 8192 words: k = 1024
    scales = (torch.rand(n, k // 32, generator=torch.Generator().manual_seed(4)) + 0.5).to(out_dtype)
    q = QuantizedTensor(codes.to(device), scales.to(device), None, spec, (n, k))
    assert torch.equal(dequantize(q, out_dtype), dequantize_ref(q, out_dtype))


@pytest.mark.parametrize("n,units", [(64, "words"), (37, "words"), (64, "bytes")])
def test_nf4_gemv_matches_float64(n, units, device):
    """int32 words: 8 fields a word looked up at once (masked rows at N = 37); codes whose rows are
    not whole aligned words (a strided view) are read as bytes, a field at a time."""
    gen = torch.Generator().manual_seed(5)
    k, spec = 1024, QuantSpec(4, "nf4", "group", 32)
    q = quantize(torch.randn(n, k, generator=gen).to(device), spec)
    if units == "bytes":
        wide = torch.zeros(n, k // 2 + 2, dtype=torch.uint8, device=device)
        wide[:, : k // 2] = q.codes
        q = QuantizedTensor(wide[:, : k // 2], q.scales, None, spec, (n, k))
    x = torch.randn(1, k, generator=gen).to(device)
    exact = x.double() @ dequantize_ref(q, torch.float32).double().t()
    err = ((qmatmul(x, q).double() - exact).norm() / exact.norm()).item()
    assert err <= 2 * torch.finfo(torch.float32).eps + k * torch.finfo(torch.float32).eps
