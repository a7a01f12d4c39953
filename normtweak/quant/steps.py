"""The quantizers as block-pass steps (normtweak.walk): quantize a block, round its scales."""

from __future__ import annotations

import torch
from torch import nn

from normtweak.config import QuantSpec
from normtweak.quant.model import quantize_block, quantize_head, replace_with_shells
from normtweak.quant.scales import round_module_scales
from normtweak.walk.state import BlockState, Step


class Quantize(Step):
    """Replace the block's linears by QuantLinears: RTN, or GPTQ from the block's inputs
    (spec.true_sequential honoured there); after the last block, the head when
    spec.quantize_head."""

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec

    def before(self, state: BlockState) -> None:
        calibrate = (lambda: state.run()) if self.spec.method == "gptq" else None
        state.quantized = quantize_block(state.block, self.spec, calibrate)

    def resume(self, state: BlockState) -> None:
        replace_with_shells(state.block, self.spec)

    def finish(self, model: nn.Module) -> None:
        if self.spec.quantize_head:
            quantize_head(model, self.spec)


class RoundScales(Step):
    """Round the block's quantized scales to the dtype the saved format stores them in
    (float16 for GPTQ and GGUF), so what is tuned afterwards is what will be served."""

    def __init__(self, dtype: str | torch.dtype) -> None:
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def before(self, state: BlockState) -> None:
        round_block_scales(state.quantized, self.dtype, state.index)


def round_block_scales(quantized: dict, dtype: torch.dtype | None, index: int) -> None:
    """Round the scales of a block's QuantLinears to `dtype` (None: leave them)."""
    if dtype is not None:
        for name, q in quantized.items():
            round_module_scales(q, dtype, f"block {index}: {name}")
