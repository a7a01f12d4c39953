"""Quantization parameters trained jointly with the norms (beyond the paper; opt-in).

A `TunableQuantLinear` stands in for a block's QuantLinear while the block trains. It
keeps the float weight W [out, in] and recomputes the quantized weight on every forward
from trainable clipping factors (and, optionally, rounding offsets), the way SignRound /
AutoRound (Cheng et al., arXiv 2309.05516) parameterizes it:

  asymmetric: lo = min(min W_g, 0) * alpha_g,  hi = max(max W_g, 0) * beta_g,
              s = (hi - lo) / (2**b - 1),      z = round(-lo / s)
  symmetric:  s = s0_g * beta_g,  z = 2**(b-1)  (s0 the base grid's scale: max|W_g| /
              ((2**b - 1) / 2), or -m_g / 2**(b-1) with QuantSpec.full_range)
  q = clamp(round(W / s + v0 + d) + z, 0, 2**b - 1),  W_hat = s * (q - z)

round's gradient passes straight through. alpha = beta = 1 and d = 0 reproduce the base
quantizer's codes and parameters exactly: the base quantizer's integer departures from
round-to-nearest (0 for RTN; GPTQ's error-compensating choices) are added to the code as
fixed offsets v0, so training starts from RTN or GPTQ alike. `finalize` returns codes, scale, zero in the format every
QuantLinear (and every export) stores: the served format is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normtweak.config import QuantSpec
from normtweak.quant.linear import QuantLinear, default_g_idx
from normtweak.quant.rtn import expand_groups, group_view, max_code

CLIP_RANGE = (0.5, 1.0)  # alpha, beta: clip each group's range by at most half
ROUND_RANGE = (-0.5, 0.5)  # d: move a code by at most one level from its start


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def clipped_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (differentiable) and integer zero point of each group's clipped range [lo, hi]."""
    maxq = max_code(bits)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / (maxq / 2)
        scale = torch.where(amax > 0, scale, torch.ones_like(scale))
        return scale, torch.full_like(scale, float(1 << (bits - 1)))
    span = hi - lo
    scale = torch.where(span > 0, span / maxq, torch.ones_like(span))
    zero = torch.round(-lo.detach() / scale.detach()).clamp(0, maxq)
    return scale, zero


class TunableQuantLinear(nn.Module):
    """A quantized Linear with trainable clipping `alpha`, `beta` [out, G] and, if
    `rounding`, rounding offsets `d` [out, in]; starts exactly at the given quantization.

    The scale is kept as the base scale times the clipped/unclipped range ratio (exactly 1
    at the start), and the base quantizer's departures from round-to-nearest (GPTQ's error
    compensation; none for RTN) ride along as integer offsets `v0`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, codes: torch.Tensor,
                 scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec, rounding: bool) -> None:
        super().__init__()
        if spec.group_size == 0:
            raise ValueError("tuning quantization parameters needs per-channel or grouped "
                             "scales (group_size -1 or > 0), not per-tensor (0)")
        self.spec = spec
        w = weight.detach().float()
        self.register_buffer("weight", w)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        wg = group_view(w, spec.group_size)
        self.register_buffer("lo", wg.amin(dim=-1).clamp(max=0))
        self.register_buffer("hi", wg.amax(dim=-1).clamp(min=0))
        self.register_buffer("s0", scale.detach().float().to(w.device))
        self.register_buffer("z0", zero.detach().float().to(w.device))
        self.register_buffer("r0", torch.round(-self.lo / self.s0))
        self.alpha = nn.Parameter(torch.ones_like(self.lo))
        self.beta = nn.Parameter(torch.ones_like(self.hi))
        if spec.symmetric:
            self.alpha.requires_grad_(False)  # one range per group: beta alone scales it
        with torch.no_grad():
            rtn = torch.clamp(torch.round(w / self._expand(self.s0)) + self._expand(self.z0),
                              0, max_code(spec.bits))
            self.register_buffer("v0", codes.to(w.device).float() - rtn)
        self.d = nn.Parameter(torch.zeros_like(w)) if rounding else None

    def tuned_parameters(self) -> list[nn.Parameter]:
        params = [p for p in (self.alpha, self.beta) if p.requires_grad]
        return params + ([self.d] if self.d is not None else [])

    def _expand(self, params: torch.Tensor) -> torch.Tensor:
        return expand_groups(params, self.weight.shape[1], self.spec.group_size)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale (differentiable) and integer zero point, [out, G]."""
        if self.spec.symmetric:
            return self.s0 * self.beta, self.z0
        span = self.hi - self.lo
        ratio = (self.hi * self.beta - self.lo * self.alpha) / torch.where(span > 0, span, 1.0)
        scale = self.s0 * torch.where(span > 0, ratio, torch.ones_like(ratio))
        shift = torch.round(-self.lo * self.alpha.detach() / scale.detach()) - self.r0
        return scale, (self.z0 + shift).clamp(0, max_code(self.spec.bits))

    def _codes(self, s: torch.Tensor, z: torch.Tensor, round_fn) -> torch.Tensor:
        maxq = max_code(self.spec.bits)
        x = self.weight / s if self.d is None else self.weight / s + self.d
        return torch.clamp(torch.clamp(round_fn(x) + z, 0, maxq) + self.v0, 0, maxq)

    def fake_weight(self) -> torch.Tensor:
        """The dequantized weight [out, in] for the current parameters (differentiable)."""
        scale, zero = self.qparams()
        s, z = self._expand(scale), self._expand(zero)
        return s * (self._codes(s, z, round_ste) - z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.fake_weight().to(x.dtype), bias)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the parameters in their ranges (after each optimizer step)."""
        self.alpha.clamp_(*CLIP_RANGE)
        self.beta.clamp_(*CLIP_RANGE)
        if self.d is not None:
            self.d.clamp_(*ROUND_RANGE)

    @torch.no_grad()
    def finalize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes int32 [out, in], scale float32 [out, G], zero float32 [out, G])."""
        scale, zero = self.qparams()
        codes = self._codes(self._expand(scale), self._expand(zero), torch.round)
        return codes.to(torch.int32), scale.float(), zero.float()


def make_tunable(qlinear: QuantLinear, weight: torch.Tensor, rounding: bool) -> TunableQuantLinear:
    """A TunableQuantLinear starting at `qlinear`'s codes, from the float `weight` it quantized."""
    g_idx = default_g_idx(qlinear.in_features, qlinear.group_size, qlinear.g_idx.device)
    if not torch.equal(qlinear.g_idx, g_idx):
        raise ValueError("tuning quantization parameters needs g_idx = j // group_size: use "
                         "GPTQ with static_groups=True (the default) or without act_order")
    return TunableQuantLinear(weight, qlinear.bias, qlinear.codes(), qlinear.scales,
                              qlinear.zeros, qlinear.spec, rounding)


def to_quant_linear(tunable: TunableQuantLinear, template: QuantLinear) -> QuantLinear:
    """A QuantLinear with the tuned codes and parameters (scale dtype and bias of `template`)."""
    codes, scale, zero = tunable.finalize()
    lin = nn.Linear(template.in_features, template.out_features, bias=template.bias is not None,
                    device=tunable.weight.device)
    if template.bias is not None:
        with torch.no_grad():
            lin.bias.copy_(template.bias)
    return QuantLinear.from_linear(lin, codes, scale, zero, template.spec,
                                   scale_dtype=template.scales.dtype)


def sign_sgd_step(params: list[nn.Parameter], lr: float) -> None:
    """p -= lr * sign(grad): SignRound's optimizer (the step size alone sets the move)."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(torch.sign(p.grad), alpha=-lr)
