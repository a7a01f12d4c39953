"""Packing codes into int32 words round-trips exactly for every bit width."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normtweak.quant.pack import pack, packed_words, unpack


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), rows=st.integers(1, 5), cols=st.integers(1, 70),
       seed=st.integers(0, 2**31 - 1))
def test_pack_roundtrip(bits, rows, cols, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (rows, cols), generator=gen, dtype=torch.int32)
    packed = pack(codes, bits)
    assert packed.dtype == torch.int32
    assert packed.shape == (rows, (cols * bits + 31) // 32)
    assert torch.equal(unpack(packed, bits, cols), codes)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_extreme_codes_roundtrip(bits):
    top = 2 ** bits - 1
    codes = torch.tensor([[top] * 40, [0] * 40, [top, 0] * 20], dtype=torch.int32)
    assert torch.equal(unpack(pack(codes, bits), bits, 40), codes)


def test_layout_is_little_endian_bitstream():
    # 4-bit codes 1..8 in one word: nibble j holds code j -> 0x87654321 (negative int32).
    codes = torch.arange(1, 9, dtype=torch.int32).reshape(1, 8)
    assert int(pack(codes, 4)[0, 0]) == 0x87654321 - 2 ** 32
    # 3-bit: code 10 (0b111 at bit 30) straddles words 0 and 1.
    codes3 = torch.zeros(1, 11, dtype=torch.int32)
    codes3[0, 10] = 7
    p = pack(codes3, 3)
    assert packed_words(11, 3) == 2
    assert int(p[0, 0]) == 0b11 << 30 or int(p[0, 0]) == (0b11 << 30) - 2 ** 32
    assert int(p[0, 1]) == 0b1


def test_out_of_range_codes_rejected():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack(torch.tensor([[16]]), 4)
    with pytest.raises(ValueError, match="words"):
        unpack(torch.zeros(1, 3, dtype=torch.int32), 4, 8)
