"""Saving and loading quantized models (safetensors + config.json, atomic writes)."""

from normtweak.io.load import load_quantized, read_quantization_config
from normtweak.io.save import atomic_folder, dequantized_copy, export_dequantized, save_quantized

__all__ = [
           "atomic_folder",
           "dequantized_copy",
           "export_dequantized",
           "load_quantized",
           "read_quantization_config",
           "save_quantized",
]
