"""Weight quantizers: RTN, GPTQ, packed QuantLinear, and the toy INT8 paths.

Public API:
  rtn_quantize, compute_qparams, quantize, dequantize   (normtweak.quant.rtn)
  GPTQ, gptq_quantize                                   (normtweak.quant.gptq)
  pack, unpack                                          (normtweak.quant.pack)
  QuantLinear                                           (normtweak.quant.linear)
  dequant_matmul (fused Triton kernel, CUDA)            (normtweak.quant.kernels)
  quantize_block, quantize_model                        (normtweak.quant.model)
  Int8Norm, W8A8Linear, wrap_norms_int8, quantize_model_w8a8  (normtweak.quant.int8)
"""

from normtweak.quant.gptq import GPTQ, GPTQResult, gptq_quantize
from normtweak.quant.int8 import Int8Norm, W8A8Linear, quantize_model_w8a8, wrap_norms_int8
from normtweak.quant.linear import QuantLinear
from normtweak.quant.model import quantize_block, quantize_head, quantize_model
from normtweak.quant.pack import pack, unpack
from normtweak.quant.rtn import compute_qparams, dequantize, quantize, rtn_quantize

__all__ = [
    "GPTQ",
    "GPTQResult",
    "Int8Norm",
    "QuantLinear",
    "W8A8Linear",
    "compute_qparams",
    "dequantize",
    "gptq_quantize",
    "pack",
    "quantize",
    "quantize_block",
    "quantize_head",
    "quantize_model",
    "quantize_model_w8a8",
    "rtn_quantize",
    "unpack",
    "wrap_norms_int8",
]
