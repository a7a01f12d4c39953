"""Round quantization scales to the dtype a serving format stores them in.

GPTQ stores scales in float16, GGUF in float16, compressed-tensors in the checkpoint's
dtype (often bfloat16). Rounding them *before* tweaking lets the norms compensate the
weights that will actually be served. The buffers keep their dtype; only the values move
to the nearest representable number.
"""

from __future__ import annotations

import torch
from torch import nn

FORMAT_SCALE_DTYPES = {"gptq": torch.float16, "gguf": torch.float16,
                       "compressed-tensors": None, "float": None}


def round_scales(model: nn.Module, dtype: torch.dtype | str) -> int:
    """Round every QuantLinear's scales (in place) to values `dtype` holds; returns how many
    scales changed. dtype: torch.float16 / torch.bfloat16, or a format name from
    FORMAT_SCALE_DTYPES (None there: nothing to round)."""
    from normtweak.quant.linear import QuantLinear

    if isinstance(dtype, str):
        if dtype not in FORMAT_SCALE_DTYPES:
            raise ValueError(f"unknown format {dtype!r}; choose from {tuple(FORMAT_SCALE_DTYPES)}")
        dtype = FORMAT_SCALE_DTYPES[dtype]
        if dtype is None:
            return 0
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"scales can be rounded to float16, bfloat16 or float32, not {dtype}")
    changed = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuantLinear):
                rounded = m.scales.to(dtype).to(m.scales.dtype)
                if not torch.isfinite(rounded).all() or ((rounded == 0) & (m.scales != 0)).any():
                    raise ValueError(f"a scale of {type(m).__name__} is outside {dtype}'s range "
                                     f"(it would become 0 or inf): this format cannot hold it")
                changed += int((rounded != m.scales).sum())
                m.scales.copy_(rounded)
    return changed
