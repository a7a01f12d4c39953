"""RTN against an independent float64 NumPy formula, for every (bits, group, symmetric), on
both symmetric grids (GPTQ's and the full-range default)."""

import numpy as np
import pytest
import torch

from normtweak.config import QuantSpec
from normtweak.quant.rtn import dequantize, rtn_fake_quantize, rtn_quantize

OUT, IN = 12, 96


def reference_rtn(w: np.ndarray, bits: int, group_size: int, symmetric: bool):
    """Textbook RTN in float64: returns codes, dequantized weight (both [out, in])."""
    out, inf = w.shape
    if group_size == 0:
        groups = [(slice(None), slice(None))]
    elif group_size == -1:
        groups = [(slice(r, r + 1), slice(None)) for r in range(out)]
    else:
        groups = [(slice(r, r + 1), slice(c, c + group_size))
                  for r in range(out) for c in range(0, inf, group_size)]
    codes = np.zeros_like(w)
    deq = np.zeros_like(w)
    for rows, cols in groups:
        g = w[rows, cols]
        if symmetric:
            # IST-DASLab's gptq.py Quantizer(sym=True): the range [-max|w|, max|w|] over
            # 2**bits - 1 steps, zero point at the middle code (maxq + 1) / 2.
            xmax = np.abs(g).max()
            scale = (xmax - (-xmax)) / (2 ** bits - 1) or 1.0
            zero = (2 ** bits - 1 + 1) / 2
        else:
            lo, hi = min(g.min(), 0.0), max(g.max(), 0.0)
            scale = (hi - lo) / (2 ** bits - 1) or 1.0
            zero = min(max(np.round(-lo / scale), 0), 2 ** bits - 1)
        q = np.clip(np.round(g / scale) + zero, 0, 2 ** bits - 1)
        codes[rows, cols] = q
        deq[rows, cols] = scale * (q - zero)
    return codes, deq


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("group_size", [-1, 0, 32])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_matches_float64_reference(bits, group_size, symmetric):
    gen = torch.Generator().manual_seed(bits * 100 + group_size)
    w = torch.randn(OUT, IN, generator=gen) * 0.02
    w[0, :5] = torch.rand(5, generator=gen)  # one-signed stretch: range must still hold 0
    w[1] = w[1].abs()  # an all-positive row
    spec = QuantSpec(bits=bits, group_size=group_size, symmetric=symmetric, full_range=False)
    codes, scale, zero = rtn_quantize(w, spec)
    ref_codes, ref_deq = reference_rtn(w.double().numpy(), bits, group_size, symmetric)
    assert codes.dtype == torch.int32
    assert int(codes.min()) >= 0 and int(codes.max()) <= 2 ** bits - 1
    np.testing.assert_array_equal(codes.numpy(), ref_codes)
    deq = dequantize(codes, scale, zero, group_size, dtype=torch.float64)
    np.testing.assert_allclose(deq.numpy(), ref_deq, rtol=1e-6, atol=1e-9)
    assert scale.shape == zero.shape == (OUT, spec.groups(IN))


@pytest.mark.parametrize("full_range", [False, True])
def test_zero_is_exact_and_error_bounded(full_range):
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    w[:, ::7] = 0.0
    spec = QuantSpec(bits=3, group_size=16, full_range=full_range)
    codes, scale, zero = rtn_quantize(w, spec)
    deq = dequantize(codes, scale, zero, 16, dtype=torch.float64)
    assert torch.all(deq[:, ::7] == 0)
    # Round-to-nearest error is at most half a step inside the grid's range. Full range puts
    # the extreme of larger magnitude on the lowest level, -4 steps; the other side's top level
    # is +3 steps, and its weights (at most 4 steps away from zero) are within one step of it.
    step = scale.abs().repeat_interleave(16, dim=1).double()
    err = (deq - w.double()).abs()
    inside = w.double().abs() <= 3 * step if full_range else torch.ones_like(err, dtype=torch.bool)
    assert torch.all(err[inside] <= step[inside] / 2 + 1e-6)
    assert torch.all(err <= step + 1e-6)
    if full_range:
        assert not torch.all(inside)  # the case the wider bound is for occurs here


def test_all_zero_group_and_fake_quant_dtype():
    w = torch.zeros(4, 32, dtype=torch.bfloat16)
    out = rtn_fake_quantize(w, QuantSpec(bits=4, group_size=16))
    assert out.dtype == torch.bfloat16 and torch.all(out == 0)


def test_spec_validation_names_layer_and_numbers():
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(bits=9)
    spec = QuantSpec(group_size=128)
    with pytest.raises(ValueError, match=r"'mlp.down_proj'.*128.*1000"):
        spec.check_layer("mlp.down_proj", 1000)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_uses_the_full_signed_grid(bits):
    """GPTQ's symmetric grid: signed levels q - zero span [-2**(bits-1), 2**(bits-1) - 1],
    every code is used."""
    w = torch.linspace(-1.0, 1.0, 4096).repeat(4, 1) * torch.tensor([[1.0], [0.5], [2.0], [3.0]])
    codes, scale, zero = rtn_quantize(w, QuantSpec(bits=bits, group_size=-1, symmetric=True,
                                                   full_range=False))
    signed = codes - zero.to(torch.int32)
    assert int(signed.min()) == -(2 ** (bits - 1)) and int(signed.max()) == 2 ** (bits - 1) - 1
    assert torch.unique(codes).numel() == 2 ** bits
    # The most negative weight maps exactly onto the lowest level (hand-computed: -max|w|
    # / (2 max|w| / (2**bits - 1)) = -(2**bits - 1) / 2, which rounds to -2**(bits-1)).
    row = w[0].double()
    i = int(torch.argmax(row.abs()))
    assert int(codes[0, i]) == (0 if row[i] < 0 else 2 ** bits - 1)


# --- the symmetric full-range grid (QuantSpec.full_range) -----------------------------------


def reference_full_range(w: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """Float64, from the definition: each group's levels are s * k, k = -2**(bits-1) ..
    2**(bits-1) - 1, with s chosen so the extreme of larger magnitude is the level
    k = -2**(bits-1); every weight takes its nearest level (brute force, no rounding
    formula)."""
    out, inf = w.shape
    size = inf if group_size == -1 else group_size
    deq = np.zeros_like(w)
    k = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=np.float64)
    for r in range(out):
        for c in range(0, inf, size):
            g = w[r, c:c + size]
            m = g[np.argmax(np.abs(g))]
            levels = (m / -(2 ** (bits - 1))) * k
            deq[r, c:c + size] = levels[np.argmin(np.abs(g[:, None] - levels[None, :]), axis=1)]
    return deq


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [-1, 32])
def test_full_range_matches_float64_nearest_level(bits, group_size):
    gen = torch.Generator().manual_seed(7 * bits + group_size)
    w = torch.randn(OUT, IN, generator=gen, dtype=torch.float64) * 0.02
    w[1] = w[1].abs()  # all positive: the scale is negative
    w[2] = -w[2].abs()  # all negative
    spec = QuantSpec(bits=bits, group_size=group_size, symmetric=True, full_range=True)
    codes, scale, zero = rtn_quantize(w, spec)
    assert torch.all(zero == 2 ** (bits - 1))
    deq = dequantize(codes, scale, zero, group_size, dtype=torch.float64)
    np.testing.assert_allclose(deq.numpy(), reference_full_range(w.numpy(), bits, group_size),
                               rtol=1e-6, atol=1e-12)


def test_full_range_hand_computed():
    """3 bits: levels k * s, k = -4..3. [-1, .5, .25, .9]: the extreme -1 -> s = 0.25, and
    0.9 clips to 3 * 0.25. [1, -.5, .3, -.2]: the extreme +1 -> s = -0.25 (code 0 is +1)."""
    w = torch.tensor([[-1.0, 0.5, 0.25, 0.9], [1.0, -0.5, 0.3, -0.2]], dtype=torch.float64)
    codes, scale, zero = rtn_quantize(w, QuantSpec(bits=3, group_size=4, full_range=True))
    assert scale.flatten().tolist() == [0.25, -0.25] and zero.flatten().tolist() == [4.0, 4.0]
    assert codes.tolist() == [[0, 6, 5, 7], [0, 6, 3, 5]]
    deq = dequantize(codes, scale, zero, 4, dtype=torch.float64)
    assert deq.tolist() == [[-1.0, 0.5, 0.25, 0.75], [1.0, -0.5, 0.25, -0.25]]


def test_full_range_is_llama_cpp_q4_0():
    """At 4 bits, group 32, the grid is GGUF's Q4_0 as gguf-py's own quantizer writes it
    (d = max / -8, q = trunc(w / d + 8.5)): same codes, and d is our scale in float16."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize as gguf_quantize

    gen = torch.Generator().manual_seed(11)
    w = torch.randn(16, 256, generator=gen) * 0.05
    w[3] = w[3].abs()
    raw = gguf_quantize(w.numpy(), GGMLQuantizationType.Q4_0).reshape(-1, 18)  # blocks of 32
    d = torch.from_numpy(raw[:, :2].copy().view(np.float16).astype(np.float32)).reshape(16, 8)
    qs = torch.from_numpy(raw[:, 2:].astype(np.int32))
    theirs = torch.cat([qs & 0xF, qs >> 4], dim=1).reshape(16, 256)  # q[j] | q[j+16] << 4
    codes, scale, zero = rtn_quantize(w, QuantSpec(bits=4, group_size=32, full_range=True))
    assert torch.equal(codes, theirs)
    assert torch.equal(scale.half().float(), d)


def test_full_range_is_the_symmetric_default_and_old_records_keep_their_grid():
    assert QuantSpec().full_range is True and QuantSpec.scheme("W3A16").full_range is True
    assert QuantSpec(symmetric=False).full_range is False
    assert QuantSpec.scheme("W4A16_ASYM").full_range is False
    assert QuantSpec(full_range=False).full_range is False
    # a record an older normtweak saved (no full_range) was quantized on GPTQ's grid
    old = {"bits": 4, "group_size": 128, "symmetric": True, "method": "rtn", "damp": 0.01}
    assert QuantSpec.from_record(old).full_range is False
    assert QuantSpec.from_record({**old, "full_range": True, "unknown": 1}).full_range is True
    assert QuantSpec.from_record(QuantSpec().as_dict()) == QuantSpec()
    # a resolved spec turned asymmetric: full_range=None takes the new scheme's default
    from dataclasses import replace

    with pytest.raises(ValueError, match="full_range=None"):
        replace(QuantSpec(), symmetric=False)
    assert replace(QuantSpec(), symmetric=False, full_range=None).full_range is False


def test_full_range_needs_a_symmetric_grid():
    with pytest.raises(ValueError, match="full_range.*symmetric"):
        QuantSpec(symmetric=False, full_range=True)
    with pytest.raises(TypeError, match="full_range"):
        QuantSpec(full_range="yes")
