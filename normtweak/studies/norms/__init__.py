"""Norm layers: Triton RMSNorm/LayerNorm (forward and backward) with a PyTorch path.

    from normtweak.studies.norms import RMSNorm, LayerNorm, rms_norm, layer_norm, swap_norms

rms_norm/layer_norm run the Triton kernels on CUDA tensors (and, with TRITON_INTERPRET=1,
interpreted on CPU tensors), the PyTorch path elsewhere. to_normtweak_norms /
from_normtweak_norms put our modules in place of a model's own norms and back;
swap_norms converts LayerNorm <-> RMSNorm.
"""

from normtweak.studies.norms.modules import (
    LayerNorm,
    RMSNorm,
    from_normtweak_norms,
    kernel_norms,
    to_normtweak_norms,
)
from normtweak.studies.norms.ops import layer_norm, rms_norm, uses_triton
from normtweak.studies.norms.swap import SwapReport, swap_norms

__all__ = [
    "LayerNorm",
    "RMSNorm",
    "SwapReport",
    "from_normtweak_norms",
    "kernel_norms",
    "layer_norm",
    "rms_norm",
    "swap_norms",
    "to_normtweak_norms",
    "uses_triton",
]
