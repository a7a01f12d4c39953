"""The PyTorch path of the norms: forward and hand-written backward, fp32 statistics.

These are the reference the Triton kernels are tested against and the path that runs
on the CPU. Shapes: x [rows, N] (callers flatten leading dimensions), weight/bias [N],
statistics [rows] float32 (float64 for float64 x). Outputs have x's dtype; weight/bias
gradients come in the statistics' dtype.
"""

from __future__ import annotations

import torch


def _f(t: torch.Tensor) -> torch.Tensor:
    """Compute dtype: float32 for float16/bfloat16/float32, float64 stays float64 (for gradcheck)."""
    return t if t.dtype == torch.float64 else t.float()


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor | None, eps: float,
                     offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x / sqrt(mean(x^2) + eps) * (offset + weight); returns (y, rstd)."""
    xf = _f(x)
    rstd = torch.rsqrt(xf.pow(2).mean(-1) + eps)
    y = xf * rstd[:, None]
    if weight is not None:
        y = y * (weight.to(xf.dtype) + offset)
    return y.to(x.dtype), rstd


def rms_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor,
                      offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, dweight) of rms_norm_forward: dx = r * (g - xhat * mean(g * xhat)), g = dy * w."""
    xf, dyf, r = _f(x), _f(dy), rstd[:, None]
    xhat = xf * r
    g = dyf * (weight.to(xf.dtype) + offset) if weight is not None else dyf
    dx = r * (g - xhat * (g * xhat).mean(-1, keepdim=True))
    dw = (dyf * xhat).sum(0) if weight is not None else None
    return dx.to(x.dtype), dw


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias (biased var); returns (y, mean, rstd)."""
    xf = _f(x)
    mean = xf.mean(-1)
    xc = xf - mean[:, None]
    rstd = torch.rsqrt(xc.pow(2).mean(-1) + eps)
    y = xc * rstd[:, None]
    if weight is not None:
        y = y * weight.to(xf.dtype)
    if bias is not None:
        y = y + bias.to(xf.dtype)
    return y.to(x.dtype), mean, rstd


def layer_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                        mean: torch.Tensor, rstd: torch.Tensor, has_bias: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dweight, dbias): dx = r * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w."""
    xf, dyf, r = _f(x), _f(dy), rstd[:, None]
    xhat = (xf - mean[:, None]) * r
    g = dyf * weight.to(xf.dtype) if weight is not None else dyf
    dx = r * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    dw = (dyf * xhat).sum(0) if weight is not None else None
    db = dyf.sum(0) if has_bias else None
    return dx.to(x.dtype), dw, db
