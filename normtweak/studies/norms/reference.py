"""The PyTorch path of the norms: forward and backward with float32 statistics.

This is the path that runs on the CPU (and wherever Triton cannot), and the path the
custom ops fall back to. Shapes: x [rows, N] (callers flatten leading dimensions),
weight/bias [N], statistics [rows] float32 (float64 for float64 x). Outputs have x's
dtype; weight/bias gradients come in the statistics' dtype.

LayerNorm uses ATen's fused native_layer_norm(_backward) (8-18x faster on the CPU than
the same formula written as separate ops), on a float32 copy of half-precision inputs
because ATen's CPU kernels return half-precision statistics for half inputs. RMSNorm
has no CPU backward in ATen, so it is written out with few temporaries. The tests
check both against an independent float64 formula.
"""

from __future__ import annotations

import torch


def _f(t: torch.Tensor) -> torch.Tensor:
    """Compute dtype: float32 for float16/bfloat16/float32, float64 stays float64 (for gradcheck)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _param(p: torch.Tensor | None, like: torch.Tensor, offset: float = 0.0) -> torch.Tensor | None:
    if p is None:
        return None
    p = p.to(like.dtype)
    return p + offset if offset else p


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor | None, eps: float,
                     offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x / sqrt(mean(x^2) + eps) * (offset + weight); returns (y, rstd)."""
    xf = _f(x)
    rstd = torch.rsqrt(torch.linalg.vecdot(xf, xf) / x.shape[-1] + eps)
    y = xf * rstd[:, None]
    if weight is not None:
        y.mul_(_param(weight, xf, offset))  # y is a fresh tensor: in place is safe
    return y.to(x.dtype), rstd


def rms_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor,
                      offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, dweight) of rms_norm_forward: dx = r * (g - xhat * mean(g * xhat)), g = dy * w."""
    xf, dyf, r = _f(x), _f(dy), rstd[:, None]
    xhat = xf * r
    dw = (dyf * xhat).sum(0) if weight is not None else None
    g = dyf * _param(weight, xf, offset) if weight is not None else dyf
    c = torch.linalg.vecdot(g, xhat) / x.shape[-1]
    dx = torch.addcmul(g, xhat, c[:, None], value=-1.0).mul_(r)  # never writes into dy
    return dx.to(x.dtype), dw


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias (biased var); returns (y, mean, rstd)."""
    xf = _f(x)
    y, mean, rstd = torch.native_layer_norm(xf, (x.shape[-1],), _param(weight, xf), _param(bias, xf), eps)
    return y.to(x.dtype), mean.view(-1), rstd.view(-1)


def layer_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                        mean: torch.Tensor, rstd: torch.Tensor, has_bias: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dweight, dbias): dx = r * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w."""
    xf, dyf = _f(x), _f(dy)
    w = _param(weight, xf)
    # ATen reads only the bias argument's presence (it needs one to return dbias).
    bias = xf.new_zeros(x.shape[-1]) if has_bias else None
    dx, dw, db = torch.ops.aten.native_layer_norm_backward(
        dyf, xf, [x.shape[-1]], mean.view(-1, 1), rstd.view(-1, 1), w, bias,
        [True, w is not None, has_bias])
    return dx.to(x.dtype), dw, db

