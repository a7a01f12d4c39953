"""nn.Modules on the normtweak norm ops, and the in-place swap of a model's own norms.

`to_normtweak_norms(module)` replaces every transformers norm inside `module` (Llama /
Qwen / Mistral RMSNorm, Gemma's (1 + w) RMSNorm, nn.LayerNorm) by ours, sharing the
same Parameter objects, so outputs are unchanged and training our module trains the
model's weights; `from_normtweak_norms` puts the original modules back (they still
hold those Parameters), so a saved model stays plain transformers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from normtweak.studies.norms.ops import layer_norm, rms_norm


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * (offset + weight); offset 1.0 is Gemma's convention."""

    kind = "rms"

    def __init__(self, hidden_size: int, eps: float = 1e-6, offset: float = 0.0,
                 elementwise_affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.hidden_size, self.eps, self.offset = hidden_size, float(eps), float(offset)
        init = torch.full((hidden_size,), 1.0 - offset, device=device, dtype=dtype)
        self.weight = nn.Parameter(init) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, self.offset)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}, offset={self.offset}"


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm's formula (biased variance) on the normtweak ops."""

    kind = "layer"

    def __init__(self, hidden_size: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.hidden_size, self.eps = hidden_size, float(eps)
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(hidden_size, **kw)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(hidden_size, **kw)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}, bias={self.bias is not None}"


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _hidden(norm: nn.Module) -> int | None:
    weight = getattr(norm, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.shape[0]
    shape = getattr(norm, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _candidate(norm: nn.Module, kind: str, eps: float, offset: float, hidden: int) -> nn.Module:
    """Our module computing `kind` with `norm`'s own Parameters (the same objects, not copies)."""
    weight = getattr(norm, "weight", None)
    if kind == "layer":
        new = LayerNorm(hidden, eps, elementwise_affine=False)
        new.weight, new.bias = weight, getattr(norm, "bias", None)
    else:
        new = RMSNorm(hidden, eps, offset=offset, elementwise_affine=False)
        new.weight = weight
    return new


@torch.no_grad()
def _probe_error(norm: nn.Module, ours: nn.Module, hidden: int) -> float:
    """Largest |ours(x) - norm(x)| relative to max|norm(x)| on a fixed probe with nonzero mean."""
    weight = getattr(norm, "weight", None)
    like = weight if isinstance(weight, torch.Tensor) else torch.empty(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, hidden, generator=g) * 2 + 0.7).to(device=like.device, dtype=like.dtype)
    theirs = norm(x)
    return float((ours(x).double() - theirs.double()).abs().max() / theirs.double().abs().max().clamp_min(1e-6))


def _ours(norm: nn.Module, offset: float | None) -> nn.Module | None:
    """Our module reproducing `norm` (verified on a probe input), or None when none does.

    The candidates are what normtweak.arch.describe_norm reads (kind, eps), with the
    given RMSNorm offset, or with offset 0 and 1 (Gemma's 1 + w) when offset is None.
    """
    from normtweak.arch import Adapter, describe_norm

    hidden = _hidden(norm)
    weight = getattr(norm, "weight", None)
    if hidden is None or (weight is not None and weight.is_meta):
        return None
    try:
        info = describe_norm(norm, Adapter("any", (), "", "", None, norm_offset=offset or 0.0))
    except ValueError:
        return None
    offsets = (0.0,) if info.kind == "layer" else ((offset,) if offset is not None else (0.0, 1.0))
    tol = 1e-4 if like_float32(weight) else 2e-2  # half-precision modules round differently
    best = min(((_probe_error(norm, c, hidden), i, c) for i, c in enumerate(
        _candidate(norm, info.kind, info.eps, o, hidden) for o in offsets)), key=lambda t: t[:2])
    return best[2] if best[0] <= tol else None


def like_float32(weight: torch.Tensor | None) -> bool:
    return weight is None or weight.dtype in (torch.float32, torch.float64)


def to_normtweak_norms(module: nn.Module, offset: float | None = None) -> dict[str, nn.Module]:
    """Replace every norm inside `module` by ours, in place; returns {name: original module}.

    The keys are the replaced names; keep the dict to put the originals back with
    `from_normtweak_norms`. Our modules share the originals' Parameter objects, so
    training them trains the model. Each replacement is checked on a probe input
    first; a norm no candidate reproduces (an unknown formula) stays as it is, with a
    warning. offset: the RMSNorm weight offset of this model family (1.0 for Gemma:
    normtweak.arch.Adapter.norm_offset); None detects it per module (0 or 1).
    """
    from normtweak.arch import is_norm

    originals = {}
    for name, norm in list(module.named_modules()):
        if not name or not is_norm(norm) or isinstance(norm, (RMSNorm, LayerNorm)):
            continue
        ours = _ours(norm, offset)
        if ours is None:
            warnings.warn(f"to_normtweak_norms: kept {name} ({type(norm).__name__}): no normtweak "
                          "norm reproduces its output", stacklevel=2)
            continue
        originals[name] = norm
        _set(module, name, ours)
    return originals


def from_normtweak_norms(module: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Undo to_normtweak_norms: the original modules (holding the trained Parameters) go back."""
    for name, norm in originals.items():
        ours = module.get_submodule(name)
        if getattr(ours, "weight", None) is not getattr(norm, "weight", None):
            raise ValueError(f"{name}: the weight was replaced after the swap; cannot restore safely")
        _set(module, name, norm)



@contextmanager
def kernel_norms(module: nn.Module, enabled: bool = True, offset: float | None = None) -> Iterator[dict]:
    """Inside the block, `module`'s norms are ours (Triton on CUDA); the originals come back after."""
    originals = to_normtweak_norms(module, offset) if enabled else {}
    try:
        yield originals
    finally:
        from_normtweak_norms(module, originals)
