"""Round quantization scales to the dtype a serving format stores them in (in place).

GPTQ and GGUF store scales in float16, compressed-tensors in the checkpoint's dtype.
Rounding them *before* tweaking lets the norms compensate the weights that will actually
be served. The buffers keep their dtype; only the values move to the nearest number the
target dtype holds.
"""

from __future__ import annotations

import torch
from torch import nn

ROUNDABLE = (torch.float16, torch.bfloat16, torch.float32)


@torch.no_grad()
def round_module_scales(q: nn.Module, dtype: torch.dtype, name: str = "") -> int:
    """Round one QuantLinear's scales to `dtype`'s values; returns how many changed."""
    if dtype not in ROUNDABLE:
        raise ValueError(f"scales can be rounded to float16, bfloat16 or float32, not {dtype}")
    rounded = q.scales.to(dtype).to(q.scales.dtype)
    if not torch.isfinite(rounded).all() or ((rounded == 0) & (q.scales != 0)).any():
        raise ValueError(f"a scale of {name or type(q).__name__} is outside {dtype}'s range "
                         f"(it would become 0 or inf): this format cannot hold it")
    changed = int((rounded != q.scales).sum())
    q.scales.copy_(rounded)
    return changed


def round_model_scales(model: nn.Module, dtype: torch.dtype) -> int:
    """round_module_scales for every QuantLinear of `model`; returns how many scales changed."""
    from normtweak.quant.linear import QuantLinear

    if dtype not in ROUNDABLE:
        raise ValueError(f"scales can be rounded to float16, bfloat16 or float32, not {dtype}")
    return sum(round_module_scales(m, dtype, n) for n, m in model.named_modules()
               if isinstance(m, QuantLinear))
