"""Saving and loading quantized models (safetensors + config.json, atomic writes)."""

from normtweak.io.attach import (
    attach_quantized,
    attach_to_block,
    imported_spec,
    load_quantized_linears,
)
from normtweak.io.export import export_quantized
from normtweak.io.load import load_quantized, read_quantization_config
from normtweak.io.save import atomic_folder, dequantized_copy, export_dequantized, save_quantized
from normtweak.io.scales import round_scales

__all__ = [
           "atomic_folder",
           "attach_quantized",
           "attach_to_block",
           "dequantized_copy",
           "export_dequantized",
           "export_quantized",
           "imported_spec",
           "load_quantized",
           "load_quantized_linears",
           "read_quantization_config",
           "round_scales",
           "save_quantized",
]

from normtweak.io.guard import register_guards as _register_guards

_register_guards()
