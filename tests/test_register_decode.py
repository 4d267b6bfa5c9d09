"""The PTX that splits int4 and int2 words into biased floats (field_ptx.int_word_ptx), and the PTX
that dequantizes their bytes in half precision (field_ptx.half_fields_ptx), run here through a
small emulator of the instructions they use, since the interpreter cannot run inline
PTX (on the GPU, tests/gpu/test_fast_forms.py checks the compiled form against the same answers).

Each instruction is emulated from the PTX ISA's definition (prmt's default and sign-replicating
byte selection, lop3's truth table); an instruction the emulator does not know fails the test, so a
change to the PTX is checked or refused, never passed unread.
"""

import math
import random
import struct

import pytest

MASK32 = 0xFFFFFFFF


def prmt(a: int, b: int, c: int) -> int:
    """prmt.b32 (default mode): byte k of the result is byte (c's nibble k & 7) of {b, a}, or,
    when the nibble's bit 3 is set, that byte's sign bit replicated over 8 bits."""
    source = a | (b << 32)
    out = 0
    for k in range(4):
        sel = (c >> (4 * k)) & 0xF
        byte = (source >> (8 * (sel & 7))) & 0xFF
        if sel & 8:
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * k)
    return out


def lop3(a: int, b: int, c: int, lut: int) -> int:
    """lop3.b32: bit i of the result is bit (a_i b_i c_i, as a 3-bit index) of the truth table."""
    out = 0
    for i in range(32):
        index = (((a >> i) & 1) << 2) | (((b >> i) & 1) << 1) | ((c >> i) & 1)
        out |= ((lut >> index) & 1) << i
    return out


OPS = {
    "mov.b32": lambda a: a,
    "and.b32": lambda a, b: a & b,
    "shr.u32": lambda a, b: a >> b,
    "shl.b32": lambda a, b: (a << b) & MASK32,
    "prmt.b32": prmt,
    "lop3.b32": lop3,
}


def run_ptx(ptx: str, operands: dict[str, int]) -> dict[str, int]:
    regs = dict(operands)
    for raw in ptx.split("\n"):
        line = raw.strip().rstrip(";")
        if line in ("{", "}") or line.startswith(".reg"):
            continue
        op, rest = line.split(None, 1)
        if op not in OPS:
            raise AssertionError(f"the emulator does not know {op!r}: teach it, from the PTX ISA, before using it")
        dest, *args = [t.strip() for t in rest.split(",")]
        regs[dest] = OPS[op](*[int(t, 0) if t[0].isdigit() else regs[t] for t in args]) & MASK32
    return regs


def test_the_emulator_reads_prmt_as_the_isa_defines_it():
    """Known cases of the ISA's examples: identity, byte reversal, sign replication."""
    a, b = 0x33221100, 0x77665544
    assert prmt(a, b, 0x3210) == a and prmt(a, b, 0x7654) == b
    assert prmt(a, b, 0x0123) == 0x00112233
    assert prmt(0x00800000, 0, 0x8A88) == 0x00FF0000  # byte 2 sign-replicated
    assert lop3(0xF0F0F0F0, 0xCCCCCCCC, 0xAAAAAAAA, 0xE4) == (0xF0F0F0F0 & 0xAAAAAAAA) | (0xCCCCCCCC & 0x55555555)


@pytest.mark.parametrize("halves", [False, True], ids=["2^23 + field", "1/2 + field/256"])
@pytest.mark.parametrize("bits", [4, 2])
def test_integer_words_split_into_the_bits_of_a_biased_float_per_field(bits, halves):
    pytest.importorskip("triton")
    from quantbench.kernels.field_ptx import int_word_ptx
    code = int_word_ptx(bits, halves)
    fields = 32 // bits
    rng = random.Random(bits)
    words = [rng.getrandbits(32) for _ in range(300)] + [0, MASK32, 0x12345678, 0x87654321]
    for word in words:
        regs = run_ptx(code, {f"${fields}": word})
        values = [(word >> (bits * j)) & ((1 << bits) - 1) for j in range(fields)]
        biased = [0.5 + v / 256 if halves else 2.0 ** 23 + v for v in values]
        want = [struct.unpack("<I", struct.pack("<f", b))[0] for b in biased]
        assert [regs[f"${j}"] for j in range(fields)] == want, hex(word)


def half_value(bits16: int, bfloat16: bool) -> float:
    if bfloat16:
        return struct.unpack("<f", struct.pack("<I", bits16 << 16))[0]
    return struct.unpack("<e", struct.pack("<H", bits16))[0]


def half_bits_of(value: float, bfloat16: bool) -> int:
    """value (a double) rounded once, to nearest even, into float16 or bfloat16 bits."""
    if math.isnan(value):
        return 0x7FC0 if bfloat16 else 0x7E00
    if not bfloat16:
        try:
            return struct.unpack("<H", struct.pack("<e", value))[0]  # CPython rounds to nearest even
        except OverflowError:
            return 0xFC00 if value < 0 else 0x7C00
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2^exponent, 0.5 <= |mantissa| < 1
    rounded = round(mantissa * 256) * 2.0 ** (exponent - 8)  # 8 significant bits; round() is half-even
    if abs(rounded) >= 2.0 ** 128:
        return 0xFF80 if value < 0 else 0x7F80
    return struct.unpack("<I", struct.pack("<f", rounded))[0] >> 16


def half_pairs(op, bfloat16: bool):
    """A half-precision pair instruction: op over the two halves of its operands, each result
    rounded once."""
    def run(*words):
        out = 0
        for h in range(2):
            args = [half_value((w >> (16 * h)) & 0xFFFF, bfloat16) for w in words]
            out |= half_bits_of(op(*args), bfloat16) << (16 * h)
        return out
    return run


def nan_min(a, b):
    return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)


def nan_max(a, b):
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


for _kind, _bf16 in (("f16x2", False), ("bf16x2", True)):
    OPS[f"fma.rn.{_kind}"] = half_pairs(lambda a, b, c: a * b + c, _bf16)  # exact in a double, then one rounding
    OPS[f"min.NaN.{_kind}"] = half_pairs(nan_min, _bf16)
    OPS[f"max.NaN.{_kind}"] = half_pairs(nan_max, _bf16)
OPS["or.b32"] = lambda a, b: a | b


@pytest.mark.parametrize("saturate", [False, True], ids=["plain", "saturated"])
@pytest.mark.parametrize("bfloat16", [False, True], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("bits,offset", [(4, 0), (4, 8), (2, 0), (2, 2)])
def test_half_fields_dequantize_every_field_of_every_byte(bits, offset, bfloat16, saturate):
    """field_ptx.half_fields_ptx, emulated: for every byte value at every position of a 4-byte pack,
    field j of each byte comes out as (field - offset) * scale + zero rounded once (the fields read
    in place, masked at their bit position and scaled back by the first fma: exact); saturated, a
    value past the dtype's largest finite one is clamped to it."""
    pytest.importorskip("triton")
    from quantbench.kernels.field_ptx import half_fields_ptx
    code = half_fields_ptx(bits, bfloat16, saturate, offset)
    fields = 8 // bits
    largest = 3.3895313892515355e38 if bfloat16 else 65504.0
    rng = random.Random(bits * 10 + offset)
    for word in [b * 0x01010101 for b in range(256)] + [rng.getrandbits(32) for _ in range(200)]:
        big = saturate and word % 7 == 0  # scales that overflow the dtype, to be clamped
        scales = [half_bits_of(rng.uniform(1e-3, 0.1) * (largest / 4 if big else 1), bfloat16) for _ in range(4)]
        zeros = [half_bits_of(rng.gauss(0, 0.5), bfloat16) for _ in range(4)]
        s_pairs = [scales[0] | scales[1] << 16, scales[2] | scales[3] << 16]
        z_pairs = [zeros[0] | zeros[1] << 16, zeros[2] | zeros[3] << 16]
        regs = run_ptx(code, {f"${2 * fields}": word, f"${2 * fields + 1}": s_pairs[0],
                              f"${2 * fields + 2}": s_pairs[1], f"${2 * fields + 3}": z_pairs[0],
                              f"${2 * fields + 4}": z_pairs[1]})
        for j in range(fields):
            for e in range(4):  # element e: byte e of the word, in register 2j + e // 2, half e % 2
                q = ((word >> (8 * e + bits * j)) & ((1 << bits) - 1)) - offset
                exact = q * half_value(scales[e], bfloat16) + half_value(zeros[e], bfloat16)
                if saturate:
                    exact = max(-largest, min(largest, exact))
                got = (regs[f"${2 * j + e // 2}"] >> (16 * (e % 2))) & 0xFFFF
                assert got == half_bits_of(exact, bfloat16), (hex(word), j, e)


@pytest.mark.parametrize("value,bfloat16,want", [(1.0, False, 0x3C00), (-1026.0, False, 0xE402),
                                                 (2.0 ** -6, False, 0x2400), (0.25, True, 0x3E80),
                                                 (-130.0, True, 0xC302), (-6.0, True, 0xC0C0)])
def test_half_bits_encode_both_halves(value, bfloat16, want):
    pytest.importorskip("triton")
    from quantbench.kernels.field_ptx import half_bits
    assert half_bits(value, bfloat16) == want * 0x00010001
