"""Load a folder written by `save_quantized`: rebuild QuantLinears, verify, fill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import transformers
from safetensors import SafetensorError
from safetensors.torch import load_model

from normtweak import arch
from normtweak.config import QuantSpec
from normtweak.io.format import (
    FORMAT_VERSION,
    QUANT_METHOD,
    WEIGHTS_NAME,
    file_sha256,
    replace_with_shells,
)

_SPEC_FIELDS = set(QuantSpec.__dataclass_fields__)


def read_quantization_config(path: str | os.PathLike) -> dict:
    """The quantization_config of a saved folder, checked for method and format version."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved model folder (no config.json)")
    try:
        qc = json.loads(config_file.read_text()).get("quantization_config")
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    if not qc or qc.get("quant_method") != QUANT_METHOD:
        raise ValueError(f"{path} was not saved by normtweak (no quantization_config with "
                         f"quant_method '{QUANT_METHOD}'); load it with normtweak.load_model")
    version = qc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} was saved in normtweak format version {version}, newer than this "
                         f"normtweak reads ({FORMAT_VERSION}): upgrade normtweak")
    return qc


def load_quantized(path: str | os.PathLike, device: str = "cpu", verify: bool = True):
    """Rebuild a saved quantized model with QuantLinear modules: returns (model, tokenizer)."""
    path = Path(path)
    qc = read_quantization_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    if verify and qc.get("weights_sha256") and file_sha256(weights) != qc["weights_sha256"]:
        raise ValueError(f"{weights} does not match the sha256 recorded in config.json: the file "
                         f"is truncated or was altered; save the model again")
    config = transformers.AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    arch_name = (config.architectures or [None])[0]
    model_cls = getattr(transformers, arch_name, None) if arch_name else None
    if model_cls is None:
        raise ValueError(f"{path}: unknown model class {arch_name!r} in config.json")
    model = arch.prepare_model(model_cls(config))
    spec = QuantSpec(**{k: v for k, v in qc.items() if k in _SPEC_FIELDS})
    replace_with_shells(model, spec, qc["quantized_modules"])
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} cannot be read ({err}); it is truncated or corrupt") from err
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.config.quantization_config = qc
    tokenizer = None
    if (path / "tokenizer_config.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return model.to(device).eval(), tokenizer
