"""normtweak: low-bit post-training quantization of transformer LMs with norm tweaking.

The public API (imported lazily, so `import normtweak` is cheap):

    quantize(model, spec, calibration=None)            plain RTN / GPTQ
    tweak(model, calibration, quant, tweak_spec)       quantize + norm tweaking, block by block
    grid_search(...)                                   over (lr, scale), selected on validation
    generate_calibration(model, tokenizer, ...)        self-generated calibration data
    load_calibration(path, tokenizer=None)
    save_quantized(model, tokenizer, path, ...)        / load_quantized(path) / export_dequantized
    export_quantized(folder, format, save_dir)         compressed-tensors, gptq, gguf, float
    attach_quantized(float_model, path)                another toolkit's quantized linears
    perplexity(model, tokenizer, text_or_documents, ...)
    split_perplexity(model, tokenizer, corpus, split)  each document from its own BOS, as
                                                       `normtweak eval` reports it
    load_model(name_or_path) / load_text(name, split)  offline assets
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "quantize": "normtweak.quant.model:quantize_model",
    "tweak": "normtweak.tweak.pipeline:tweak_model",
    "grid_search": "normtweak.tweak.grid:grid_search",
    "generate_calibration": "normtweak.calib:generate_calibration",
    "load_calibration": "normtweak.calib:load_calibration",
    "save_quantized": "normtweak.io:save_quantized",
    "load_quantized": "normtweak.io:load_quantized",
    "export_dequantized": "normtweak.io:export_dequantized",
    "export_quantized": "normtweak.io:export_quantized",
    "attach_quantized": "normtweak.io:attach_quantized",
    "round_scales": "normtweak.io:round_scales",
    "perplexity": "normtweak.evaluate:perplexity",
    "split_perplexity": "normtweak.evaluate.perplexity:split_perplexity",
    "load_model": "normtweak.loading.float:load_model",
    "load_text": "normtweak.assets:load_text",
    "QuantSpec": "normtweak.config:QuantSpec",
    "TweakSpec": "normtweak.config:TweakSpec",
    "GridSpec": "normtweak.config:GridSpec",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'normtweak' has no attribute {name!r}")
    module, attr = _API[name].split(":")
    return getattr(importlib.import_module(module), attr)
