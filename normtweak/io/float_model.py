"""Load a float model ready for normtweak: an offline asset, a local folder or a hub id.

The name is resolved by normtweak.assets.resolve_model (offline models are converted or
located there); a folder holding a quantized checkpoint is refused with a message that
says how to load it (normtweak.io.load knows those formats, hence this module's place).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError

from normtweak.arch import get_adapter, prepare_model, supported_model_types
from normtweak.assets import resolve_model
from normtweak.hub import hub_kwargs
from normtweak.io.load import READ_METHODS, read_quantization_config


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
):
    """Load (model, tokenizer), ready for normtweak (eval mode, no KV cache).

    Decoders load with AutoModelForCausalLM, encoders (BERT, DistilBERT) with AutoModel.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(name_or_path, cache_dir)
    local = Path(source).is_dir()
    hub = {} if local else hub_kwargs(source, str(name_or_path))
    try:
        config = AutoConfig.from_pretrained(source, **hub)
    except OSError as err:
        if local:
            raise ValueError(f"{source}/config.json cannot be read ({err})") from err
        raise FileNotFoundError(
            f"cannot load model {str(name_or_path)!r}: not a local folder, and the hub is not "
            f"reachable or has no such model ({err.__class__.__name__}). Offline models: "
            f"'smollm2-135m', 'minilm-l6', or a local folder."
        ) from err
    except ValueError as err:  # transformers does not know the model_type
        raise ValueError(f"unsupported architecture in {source} ({str(err).splitlines()[0]}); "
                         f"normtweak supports model_type in {supported_model_types()}") from err
    _refuse_quantized(config, source)
    adapter = get_adapter(config)
    auto = AutoModelForCausalLM if adapter.causal else AutoModel
    try:
        model = auto.from_pretrained(source, dtype=dtype, **hub)
    except SafetensorError as err:
        raise ValueError(f"the weights in {source} cannot be read ({err}): a truncated or "
                         f"corrupt .safetensors file; download or convert the model again") from err
    tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    model.config.name_or_path = str(name_or_path)
    return prepare_model(model), tokenizer


def _refuse_quantized(config, source: str) -> None:
    """A folder saved by normtweak.save_quantized is not a float model: say how to load it."""
    qc = getattr(config, "quantization_config", None)
    if isinstance(qc, dict) and qc.get("quant_method") in READ_METHODS:
        read_quantization_config(source)  # a newer format version gets its own message
        raise ValueError(f"{source} holds a model quantized by normtweak, not a float model: "
                         f"load it with normtweak.load_quantized; quantize the float model it "
                         f"came from instead")
