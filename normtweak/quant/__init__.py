"""Weight quantizers: RTN, GPTQ, packed QuantLinear, the SignRound-style tunable linear.

Public API:
  rtn_quantize, compute_qparams, quantize, dequantize   (normtweak.quant.rtn)
  GPTQ, gptq_quantize                                   (normtweak.quant.gptq)
  pack, unpack                                          (normtweak.quant.pack)
  QuantLinear                                           (normtweak.quant.linear)
  dequant_matmul (fused Triton kernel, CUDA)            (normtweak.quant.kernels)
  quantize_block, quantize_model                        (normtweak.quant.model)
  TunableQuantLinear (clipping and rounding that train)  (normtweak.quant.tunable)
"""

from normtweak.quant.gptq import GPTQ, GPTQResult, gptq_quantize
from normtweak.quant.linear import QuantLinear
from normtweak.quant.model import quantize_block, quantize_head, quantize_model
from normtweak.quant.pack import pack, unpack
from normtweak.quant.rtn import compute_qparams, dequantize, quantize, rtn_quantize

__all__ = [
    "GPTQ",
    "GPTQResult",
    "QuantLinear",
    "compute_qparams",
    "dequantize",
    "gptq_quantize",
    "pack",
    "quantize",
    "quantize_block",
    "quantize_head",
    "quantize_model",
    "rtn_quantize",
    "unpack",
]
