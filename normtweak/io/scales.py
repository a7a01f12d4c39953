"""Round quantization scales to the dtype a serving format stores them in.

GPTQ stores scales in float16, GGUF in float16, compressed-tensors in the checkpoint's
dtype (normtweak writes float32 there, so nothing is rounded). The rounding itself is
normtweak.quant.scales; this module maps format names to dtypes.
"""

from __future__ import annotations

import torch
from torch import nn

from normtweak.quant.scales import round_model_scales

FORMAT_SCALE_DTYPES = {"gptq": torch.float16, "gguf": torch.float16,
                       "compressed-tensors": None, "float": None}


def format_scale_dtype(fmt: str) -> torch.dtype | None:
    """The dtype format `fmt` stores scales in (None: it keeps ours as they are)."""
    if fmt not in FORMAT_SCALE_DTYPES:
        raise ValueError(f"unknown format {fmt!r}; choose from {tuple(FORMAT_SCALE_DTYPES)}")
    return FORMAT_SCALE_DTYPES[fmt]


def round_scales(model: nn.Module, dtype: torch.dtype | str) -> int:
    """Round every QuantLinear's scales (in place) to values `dtype` holds; returns how many
    scales changed. dtype: torch.float16 / torch.bfloat16, or a format name from
    FORMAT_SCALE_DTYPES (None there: nothing to round)."""
    if isinstance(dtype, str):
        dtype = format_scale_dtype(dtype)
        if dtype is None:
            return 0
    return round_model_scales(model, dtype)
