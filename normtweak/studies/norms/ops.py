"""rms_norm / layer_norm: validated entry points, torch.library custom ops, autograd.

Dispatch: Triton kernels for CUDA tensors, and for CPU tensors when TRITON_INTERPRET=1
was set before import (the kernels then run in Triton's interpreter: how CI tests
them); the PyTorch path (normtweak.studies.norms.reference) everywhere else, and for float64.
The ops are registered with torch.library (fake implementations for tracing, autograd
formulas), so torch.compile sees one opaque op per norm instead of tracing into Triton.
"""

from __future__ import annotations

import os

import torch

from normtweak.studies.norms import reference

try:  # Triton is a Linux-only dependency; without it the PyTorch path runs everywhere.
    from normtweak.studies.norms import kernels
except ImportError:  # pragma: no cover - depends on the platform
    kernels = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def uses_triton(x: torch.Tensor) -> bool:
    """Whether the Triton kernels (compiled or interpreted) run for this tensor.

    float64 always takes the PyTorch path: the kernels keep float32 statistics, which
    would spoil float64 gradchecks.
    """
    if kernels is None or x.dtype == torch.float64:
        return False
    return x.is_cuda or (INTERPRET and x.device.type == "cpu")


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _or_empty(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    # Custom ops cannot return None: an absent gradient travels as an empty tensor.
    return t.to(_stat_dtype(x)) if t is not None else x.new_empty(0, dtype=_stat_dtype(x))


# --- custom ops ---------------------------------------------------------------------


@torch.library.custom_op("normtweak::rms_norm_fwd", mutates_args=())
def _rms_fwd(x: torch.Tensor, weight: torch.Tensor | None, eps: float, offset: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    if uses_triton(x):
        return kernels.rms_forward(x, weight, eps, offset)
    return reference.rms_norm_forward(x, weight, eps, offset)


@_rms_fwd.register_fake
def _(x, weight, eps, offset):
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[0], dtype=_stat_dtype(x))


@torch.library.custom_op("normtweak::rms_norm_bwd", mutates_args=())
def _rms_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor,
             offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    if uses_triton(x):
        dx, dw, _ = kernels.norm_backward(dy.contiguous() if dy.stride(-1) != 1 else dy, x, weight, None,
                                          rstd, is_ln=False, has_bias=False, offset=offset)
    else:
        dx, dw = reference.rms_norm_backward(dy, x, weight, rstd, offset)
    return dx, _or_empty(dw, x)


@_rms_bwd.register_fake
def _(dy, x, weight, rstd, offset):
    n = 0 if weight is None else x.shape[-1]
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(n, dtype=_stat_dtype(x))


def _rms_setup(ctx, inputs, output):
    x, weight, _eps, offset = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.offset = offset


def _rms_grad(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = _rms_bwd(dy, x, weight, rstd, ctx.offset)
    return dx, (dw.to(weight.dtype) if weight is not None else None), None, None


_rms_fwd.register_autograd(_rms_grad, setup_context=_rms_setup)


@torch.library.custom_op("normtweak::layer_norm_fwd", mutates_args=())
def _ln_fwd(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if uses_triton(x):
        return kernels.ln_forward(x, weight, bias, eps)
    return reference.layer_norm_forward(x, weight, bias, eps)


@_ln_fwd.register_fake
def _(x, weight, bias, eps):
    stat = x.new_empty(x.shape[0], dtype=_stat_dtype(x))
    return torch.empty_like(x, memory_format=torch.contiguous_format), stat, stat.clone()


@torch.library.custom_op("normtweak::layer_norm_bwd", mutates_args=())
def _ln_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor,
            rstd: torch.Tensor, has_bias: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if uses_triton(x):
        dx, dw, db = kernels.norm_backward(dy.contiguous() if dy.stride(-1) != 1 else dy, x, weight, mean,
                                           rstd, is_ln=True, has_bias=has_bias)
    else:
        dx, dw, db = reference.layer_norm_backward(dy, x, weight, mean, rstd, has_bias)
    return dx, _or_empty(dw, x), _or_empty(db, x)


@_ln_bwd.register_fake
def _(dy, x, weight, mean, rstd, has_bias):
    n = x.shape[-1]
    dw = x.new_empty(n if weight is not None else 0, dtype=_stat_dtype(x))
    db = x.new_empty(n if has_bias else 0, dtype=_stat_dtype(x))
    return torch.empty_like(x, memory_format=torch.contiguous_format), dw, db


def _ln_setup(ctx, inputs, output):
    x, weight, bias, _eps = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _ln_grad(ctx, dy, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw, db = _ln_bwd(dy, x, weight, mean, rstd, ctx.has_bias)
    dw = dw.to(weight.dtype) if weight is not None else None
    db = db.to(ctx.bias_dtype) if ctx.has_bias else None
    return dx, dw, db, None


_ln_fwd.register_autograd(_ln_grad, setup_context=_ln_setup)


# --- public functions ---------------------------------------------------------------


def _check(x: torch.Tensor, name: str, **params: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: x must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: x must be float32, float16, bfloat16 or float64, got {x.dtype}")
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"{name}: x must be non-empty with at least one dimension, got shape {tuple(x.shape)}")
    for pname, p in params.items():
        if p is None:
            continue
        if p.shape != (x.shape[-1],):
            raise ValueError(f"{name}: {pname} has shape {tuple(p.shape)}, expected ({x.shape[-1]},) "
                             f"to match the last dimension of x {tuple(x.shape)}")
        if not p.is_floating_point():
            raise ValueError(f"{name}: {pname} must be a float tensor, got {p.dtype}")
        if p.device != x.device:
            raise ValueError(f"{name}: {pname} is on {p.device} but x is on {x.device}")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as [rows, N] with a contiguous last dim: a view when possible (strided rows kept)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    if x.dim() == 2:
        return x
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:
        return x.reshape(-1, x.shape[-1])


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6,
             offset: float = 0.0) -> torch.Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * (offset + weight)."""
    _check(x, "rms_norm", weight=weight)
    y, _ = _rms_fwd(_rows(x), weight, float(eps), float(offset))
    return y.view(x.shape)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension (biased variance, as torch.nn.LayerNorm)."""
    _check(x, "layer_norm", weight=weight, bias=bias)
    y, _, _ = _ln_fwd(_rows(x), weight, bias, float(eps))
    return y.view(x.shape)
