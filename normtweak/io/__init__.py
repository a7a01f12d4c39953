"""Quantized models on disk: save (compressed-tensors), load (every format we read), export
(GPTQ, GGUF, float), scale rounding; atomic writes. Models to start from (float models, other
toolkits' checkpoints) are normtweak.loading."""

from normtweak.io.export import export_quantized
from normtweak.io.load import load_quantized, read_quantization_config
from normtweak.io.save import atomic_folder, dequantized_copy, export_dequantized, save_quantized
from normtweak.io.scales import round_scales

__all__ = ["atomic_folder", "dequantized_copy", "export_dequantized", "export_quantized",
           "load_quantized", "read_quantization_config", "round_scales", "save_quantized"]

from normtweak.loading.guard import register_guards as _register_guards  # noqa: E402

_register_guards()  # transformers refuses our own layouts instead of loading random weights
