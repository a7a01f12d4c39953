"""Pack integer codes into int32 words and back.

Each row of codes [out, in] becomes a little-endian bit stream: code j occupies bits
[j*bits, (j+1)*bits) of the row, word k holds stream bits [32k, 32k+32). Widths that
do not divide 32 (3, 5, 6, 7) let a code straddle two words; nothing is wasted
except the tail of the last word. Words are stored as int32 (two's complement of the
unsigned 32-bit pattern), shape [out, ceil(in * bits / 32)].
"""

from __future__ import annotations

import torch

_MASK32 = (1 << 32) - 1


def packed_words(in_features: int, bits: int) -> int:
    """Number of int32 words per row for `in_features` codes of `bits` bits."""
    return (in_features * bits + 31) // 32


def _positions(in_features: int, bits: int, device: torch.device):
    start = torch.arange(in_features, device=device, dtype=torch.int64) * bits
    return start // 32, start % 32


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """codes [out, in] (integers in [0, 2**bits)) -> packed int32 [out, words]."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16 for packing, got {bits}")
    c = codes.to(torch.int64)
    if c.numel() and (c.min() < 0 or c.max() >= (1 << bits)):
        raise ValueError(
            f"codes must lie in [0, {(1 << bits) - 1}] for {bits}-bit packing, "
            f"got range [{int(c.min())}, {int(c.max())}]"
        )
    out, inf = c.shape
    n_words = packed_words(inf, bits)
    if 32 % bits == 0:  # fast path: whole codes per word, no straddling
        per = 32 // bits
        c = torch.nn.functional.pad(c, (0, n_words * per - inf)).reshape(out, n_words, per)
        shifts = torch.arange(per, device=c.device, dtype=torch.int64) * bits
        return _to_int32((c << shifts).sum(-1))
    word, offset = _positions(inf, bits, c.device)
    low = (c << offset) & _MASK32
    # Bits that spill past the word end go into the next word (at most one more).
    high = c >> (32 - offset)
    words = torch.zeros(out, n_words + 1, dtype=torch.int64, device=c.device)
    # Codes never overlap, so adding their shifted bits is a bitwise OR.
    words.scatter_add_(1, word.expand(out, inf), low)
    words.scatter_add_(1, (word + 1).expand(out, inf), high)
    return _to_int32(words[:, :n_words])


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit patterns held in int64 -> the int32 with the same bits."""
    return torch.where(words >= (1 << 31), words - (1 << 32), words).to(torch.int32)


def unpack(packed: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """packed int32 [out, words] -> codes int32 [out, in_features] (inverse of `pack`)."""
    out, n_words = packed.shape
    if n_words != packed_words(in_features, bits):
        raise ValueError(
            f"packed tensor has {n_words} words per row; {in_features} codes of {bits} bits "
            f"need {packed_words(in_features, bits)}"
        )
    w = packed.to(torch.int64) & _MASK32
    if 32 % bits == 0:
        per = 32 // bits
        shifts = torch.arange(per, device=w.device, dtype=torch.int64) * bits
        codes = (w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
        return codes.reshape(out, n_words * per)[:, :in_features].to(torch.int32)
    w = torch.cat([w, torch.zeros(out, 1, dtype=torch.int64, device=w.device)], dim=1)
    word, offset = _positions(in_features, bits, packed.device)
    lo = w[:, word] >> offset
    hi = w[:, word + 1] << (32 - offset)
    return ((lo | hi) & ((1 << bits) - 1)).to(torch.int32)
