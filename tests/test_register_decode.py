"""The PTX that splits int4 and int2 words into biased floats (field_ptx.int_word_ptx), run
here through a small emulator of the instructions it uses, since the interpreter cannot run inline
PTX (on the GPU, tests/gpu/test_fast_forms.py checks the compiled form against the same answers).

Each instruction is emulated from the PTX ISA's definition (prmt's default and sign-replicating
byte selection, lop3's truth table); an instruction the emulator does not know fails the test, so a
change to the PTX is checked or refused, never passed unread.
"""

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
