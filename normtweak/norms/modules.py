"""nn.Modules on the normtweak norm ops, and the in-place swap of a model's own norms.

`to_normtweak_norms(module)` replaces every transformers norm inside `module` (Llama /
Qwen / Mistral RMSNorm, Gemma's (1 + w) RMSNorm, nn.LayerNorm) by ours, sharing the
same Parameter objects, so outputs are unchanged and training our module trains the
model's weights; `restore_norms` puts the original modules back (they still hold
those Parameters), so a saved model stays plain transformers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from normtweak.norms.ops import layer_norm, rms_norm


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


def _ours(norm: nn.Module, offset: float) -> nn.Module:
    """Our module sharing `norm`'s Parameters (the same objects, not copies)."""
    from normtweak.arch import Adapter, describe_norm

    info = describe_norm(norm, Adapter("any", (), "", "", None, norm_offset=offset))
    weight = getattr(norm, "weight", None)
    hidden = weight.shape[0] if weight is not None else int(getattr(norm, "normalized_shape", [0])[-1])
    if info.kind == "layer":
        new = LayerNorm(hidden, info.eps, elementwise_affine=False)
        new.weight, new.bias = weight, getattr(norm, "bias", None)
    else:
        new = RMSNorm(hidden, info.eps, offset=info.offset, elementwise_affine=False)
        new.weight = weight
    return new


def to_normtweak_norms(module: nn.Module, offset: float = 0.0) -> dict[str, nn.Module]:
    """Replace every norm inside `module` by ours, in place; returns {name: original module}.

    offset: the RMSNorm weight offset of this model family (1.0 for Gemma; see
    normtweak.arch.Adapter.norm_offset). Outputs are unchanged up to float rounding.
    """
    from normtweak.arch import is_norm

    originals = {}
    for name, norm in list(module.named_modules()):
        if not name or not is_norm(norm) or isinstance(norm, (RMSNorm, LayerNorm)):
            continue
        originals[name] = norm
        _set(module, name, _ours(norm, offset))
    return originals


def restore_norms(module: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Undo to_normtweak_norms: the original modules (holding the trained Parameters) go back."""
    for name, norm in originals.items():
        ours = module.get_submodule(name)
        if getattr(ours, "weight", None) is not getattr(norm, "weight", None):
            raise ValueError(f"{name}: the weight was replaced after the swap; cannot restore safely")
        _set(module, name, norm)


@contextmanager
def kernel_norms(module: nn.Module, enabled: bool = True, offset: float = 0.0) -> Iterator[dict]:
    """Inside the block, `module`'s norms are ours (Triton on CUDA); the originals come back after."""
    originals = to_normtweak_norms(module, offset) if enabled else {}
    try:
        yield originals
    finally:
        restore_norms(module, originals)
