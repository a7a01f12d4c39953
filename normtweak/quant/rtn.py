"""Round-to-nearest (RTN) weight quantization as small pure functions.

Format shared by every quantizer in normtweak (RTN, GPTQ, QuantLinear):

- codes: integers in [0, 2**bits - 1], shape [out, in] (unsigned; the zero point is
  the code that dequantizes to 0).
- scale, zero: shape [out, G] with G = QuantSpec.groups(in) (1 for per-channel and
  per-tensor; per-tensor repeats one value down the rows). `zero` holds integer
  values stored in a float tensor.
- dequantized weight: w = scale[:, g(j)] * (codes[:, j] - zero[:, g(j)]), where g(j)
  is column j's group (j // group_size, or g_idx[j] after GPTQ act-order).

Asymmetric: the range [min(w_min, 0), max(w_max, 0)] (it always contains 0, so 0 is
exactly representable) is split into 2**bits - 1 steps; zero = round(-min / scale),
clamped to the code range. Symmetric: the full signed grid [-2**(bits-1), 2**(bits-1) - 1]
around zero = 2**(bits-1), with scale = max|w| / ((2**bits - 1) / 2) (the range
[-max|w|, max|w|] split into 2**bits - 1 steps), as IST-DASLab's GPTQ and
compressed-tensors define it: all 2**bits codes are used (16 levels at 4 bits, not 15).
Symmetric full range (QuantSpec.full_range; llama.cpp's Q4_0, AutoRound's int_sym): the
same codes and zero, with scale = -m / 2**(bits-1) where m is the group's extreme of larger
magnitude, signed, so m itself lands exactly on code 0 and the step is max|w| / 2**(bits-1)
(the scale is negative where the positive extreme is the larger).
An all-zero group gets scale 1 (any scale represents it exactly).
"""

from __future__ import annotations

import torch

from normtweak.config import QuantSpec


def max_code(bits: int) -> int:
    """Largest integer code at `bits` bits (codes are unsigned: 0 .. 2**bits - 1)."""
    return (1 << bits) - 1


def group_view(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """View weight [out, in] as [rows, groups, group_len] for per-group reductions.

    group_size -1: [out, 1, in]; 0 (per tensor): [1, 1, out*in]; g > 0: [out, in/g, g].
    """
    out, inf = weight.shape
    if group_size > 0:
        if inf % group_size:
            raise ValueError(f"group_size {group_size} does not divide in_features {inf}")
        return weight.reshape(out, inf // group_size, group_size)
    if group_size == -1:
        return weight.reshape(out, 1, inf)
    if group_size == 0:
        return weight.reshape(1, 1, out * inf)
    raise ValueError(f"group_size must be -1, 0 or positive, got {group_size}")


def compute_qparams(
    weight: torch.Tensor, bits: int, group_size: int, symmetric: bool, full_range: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each group of weight [out, in]; both [out, G], weight's dtype.
    full_range: the symmetric full-range grid (see the module's docstring)."""
    wg = group_view(weight, group_size)
    if symmetric and full_range:
        hi, lo = wg.amax(dim=-1).clamp(min=0), wg.amin(dim=-1).clamp(max=0)
        extreme = torch.where(hi >= -lo, hi, lo)
        scale = -extreme / (1 << (bits - 1))
        scale = torch.where(extreme != 0, scale, torch.ones_like(scale))
        zero = torch.full_like(scale, float(1 << (bits - 1)))
    elif symmetric:
        amax = wg.abs().amax(dim=-1)
        scale = amax / (max_code(bits) / 2)
        scale = torch.where(amax > 0, scale, torch.ones_like(scale))
        zero = torch.full_like(scale, float(1 << (bits - 1)))
    else:
        wmin = wg.amin(dim=-1).clamp(max=0)
        wmax = wg.amax(dim=-1).clamp(min=0)
        span = wmax - wmin
        scale = torch.where(span > 0, span / max_code(bits), torch.ones_like(span))
        zero = torch.round(-wmin / scale).clamp(0, max_code(bits))
    out = weight.shape[0]
    if group_size == 0:
        scale, zero = scale.expand(out, 1).contiguous(), zero.expand(out, 1).contiguous()
    return scale, zero


def expand_groups(
    params: torch.Tensor, in_features: int, group_size: int, g_idx: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-group params [out, G] -> per-column params [out, in] (g_idx: column -> group)."""
    if g_idx is not None:
        return params[:, g_idx.long()]
    if group_size > 0:
        return params.repeat_interleave(group_size, dim=1)
    return params.expand(params.shape[0], in_features)


def quantize(
    weight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    g_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integer codes (int32, [out, in]) of weight [out, in], clamped to [0, 2**bits - 1]."""
    inf = weight.shape[1]
    s = expand_groups(scale, inf, group_size, g_idx).to(weight.dtype)
    z = expand_groups(zero, inf, group_size, g_idx).to(weight.dtype)
    codes = torch.round(weight / s) + z
    return codes.clamp(0, max_code(bits)).to(torch.int32)


def dequantize(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    g_idx: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Weight [out, in] = scale * (codes - zero), per group; in `dtype` (default scale's)."""
    dtype = dtype or scale.dtype
    inf = codes.shape[1]
    s = expand_groups(scale, inf, group_size, g_idx).to(dtype)
    z = expand_groups(zero, inf, group_size, g_idx).to(dtype)
    return s * (codes.to(dtype) - z)


def rtn_quantize(
    weight: torch.Tensor, spec: QuantSpec, compute_dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RTN-quantize weight [out, in]: (codes int32 [out, in], scale [out, G], zero [out, G]).

    Parameters and codes are computed in `compute_dtype` (float64 by default, so codes
    do not depend on float32 rounding at ties); scale and zero come back in float32.
    """
    w = weight.detach().to(compute_dtype)
    scale, zero = compute_qparams(w, spec.bits, spec.group_size, spec.symmetric, spec.full_range)
    codes = quantize(w, scale, zero, spec.bits, spec.group_size)
    return codes, scale.float(), zero.float()


def rtn_fake_quantize(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize-dequantize weight [out, in] with RTN; same shape and dtype as the input."""
    codes, scale, zero = rtn_quantize(weight, spec)
    return dequantize(codes, scale, zero, spec.group_size, dtype=torch.float32).to(weight.dtype)
