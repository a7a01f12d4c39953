"""Save quantized (and tweaked) models, atomically: a temporary folder, then a rename."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn

from normtweak import __version__, arch
from normtweak.config import QuantSpec, TweakSpec
from normtweak.io.format import (
    FORMAT_VERSION,
    QUANT_METHOD,
    WEIGHTS_NAME,
    file_sha256,
    quantized_module_names,
)


def atomic_folder(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_folder), then move tmp_folder to `path` (replacing it); clean up on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while saving to {path}; nothing was written") from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def quantization_config(model: nn.Module, quant: QuantSpec, tweak: TweakSpec | None,
                        calibration_sha256: str | None, extra: dict | None) -> dict:
    return {
        "quant_method": QUANT_METHOD,
        "format_version": FORMAT_VERSION,
        "normtweak_version": __version__,
        **{k: v for k, v in quant.as_dict().items()},
        "tweak": tweak.as_dict() if tweak is not None else None,
        "calibration_sha256": calibration_sha256,
        "quantized_modules": quantized_module_names(model),
        **(extra or {}),
    }


def save_quantized(model: nn.Module, tokenizer, path: str | os.PathLike, *, quant: QuantSpec,
                   tweak: TweakSpec | None = None, calibration_sha256: str | None = None,
                   extra: dict | None = None) -> Path:
    """Write a quantized model folder that `load_quantized` rebuilds exactly.

    The sha256 of model.safetensors is recorded in config.json so a truncated or
    altered file is refused on load.
    """
    if not quantized_module_names(model):
        raise ValueError("the model has no QuantLinear modules: quantize it before save_quantized")

    def write(tmp: Path) -> None:
        weights = tmp / WEIGHTS_NAME
        save_model(model, str(weights), metadata={"format": "pt", "normtweak_format": str(FORMAT_VERSION)})
        config = model.config.to_dict()
        config["architectures"] = [type(model).__name__]
        qc = quantization_config(model, quant, tweak, calibration_sha256, extra)
        qc["weights_sha256"] = file_sha256(weights)
        config["quantization_config"] = qc
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_folder(path, write)


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every QuantLinear turned back into an nn.Linear (the dequantized weight)."""
    from normtweak.quant.linear import QuantLinear
    from normtweak.quant.model import set_submodule

    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, QuantLinear):
            set_submodule(plain, name, module.to_linear())
    adapter = arch.get_adapter(plain)
    if adapter.conv1d:
        arch.linear_to_conv1d(plain, adapter)
    head, emb = adapter.get_head(plain), adapter.get_embeddings(plain)
    if getattr(plain.config, "tie_word_embeddings", False) and head is not None and emb is not None:
        if head.weight.data_ptr() != getattr(emb, "weight", head.weight).data_ptr():
            plain.config.tie_word_embeddings = False  # a quantized head no longer equals the embeddings
    return plain


def export_dequantized(model: nn.Module, tokenizer, path: str | os.PathLike,
                       dtype: torch.dtype | None = None) -> Path:
    """Write a plain float folder that `AutoModelForCausalLM.from_pretrained` loads, no normtweak needed."""
    plain = dequantized_copy(model)
    if dtype is not None:
        plain.to(dtype)
    plain.config.architectures = [type(plain).__name__]
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_folder(path, write)
