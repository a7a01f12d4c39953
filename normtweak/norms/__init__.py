"""Norm layers: Triton RMSNorm/LayerNorm (forward and backward) with a PyTorch path.

    from normtweak.norms import RMSNorm, LayerNorm, rms_norm, layer_norm, swap_norms
"""

from normtweak.norms.modules import (
           LayerNorm,
           RMSNorm,
           kernel_norms,
           restore_norms,
           to_normtweak_norms,
)
from normtweak.norms.ops import layer_norm, rms_norm, uses_triton
from normtweak.norms.swap import SwapReport, swap_norms

__all__ = ["LayerNorm", "RMSNorm", "SwapReport", "kernel_norms", "layer_norm", "restore_norms", "rms_norm", "swap_norms",
           "to_normtweak_norms", "uses_triton"]
