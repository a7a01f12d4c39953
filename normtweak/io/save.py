"""Save quantized (and tweaked) models, atomically: a temporary folder, then a rename."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file, save_model
from torch import nn

from normtweak import __version__, arch
from normtweak.common.files import atomic_folder
from normtweak.config import QuantSpec, TweakSpec
from normtweak.io.compressed import CT_FORMAT, check_representable, encode, scheme_key, write_config
from normtweak.io.format import (
    FORMAT_VERSION,
    NATIVE_METHOD,
    NATIVE_WEIGHTS_NAME,
    PROVENANCE_NAME,
    WEIGHTS_NAME,
    file_sha256,
    quantization_map,
    quantized_module_names,
)
from normtweak.io.serving import warn_serving_kernels
from normtweak.outputs import write_library_folder


def quantized_state_dict(model: nn.Module, encode_module=None) -> dict[str, torch.Tensor]:
    """The model's tensors with each QuantLinear replaced by encode_module(name, q); tied once.

    encode_module defaults to compressed-tensors pack-quantized (refusing, before anything is
    written, modules it cannot represent); it returns suffix -> tensor, bias included.
    """
    from normtweak.quant.linear import QuantLinear

    encode_module = encode_module or _encode_ct
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    encoded = {name: encode_module(name, q) for name, q in quantized.items()}
    tensors, seen = {}, {}
    for key, t in model.state_dict().items():
        if key.rpartition(".")[0] in quantized:
            continue
        ident = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and ident in seen:  # tied weights (embeddings = head) are stored once
            continue
        seen[ident] = key
        tensors[key] = t.detach().contiguous()
    for name, parts in encoded.items():
        tensors.update({f"{name}.{k}": v for k, v in parts.items()})
    return {k: v.cpu() for k, v in tensors.items()}


def _encode_ct(name: str, q) -> dict[str, torch.Tensor]:
    check_representable(name, q)
    parts = encode(q)
    if q.bias is not None:
        parts["bias"] = q.bias.detach().contiguous()
    return parts


def write_quantized_folder(model: nn.Module, tokenizer, path, tensors: dict, record: dict,
                           add_quantization_config) -> Path:
    """Atomically write tensors, config.json (add_quantization_config(folder) adds the
    format's quantization_config), our provenance record and the tokenizer."""

    def write(tmp: Path) -> None:
        weights = tmp / WEIGHTS_NAME
        save_file(tensors, str(weights), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        head = model.get_output_embeddings()
        if head is not None and type(head) is not nn.Linear:  # a quantized head is not tied
            config["tie_word_embeddings"] = False
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        add_quantization_config(tmp)
        record["weights_sha256"] = file_sha256(weights)
        record["files_sha256"] = {weights.name: record["weights_sha256"]}  # one per weight file
        (tmp / PROVENANCE_NAME).write_text(json.dumps(record, indent=2, sort_keys=True))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_folder(path, write)


def provenance(model: nn.Module, quant: QuantSpec | None, tweak: TweakSpec | None,
               calibration_sha256: str | None, extra: dict | None) -> dict:
    """normtweak_quantization.json: our own record, which other loaders ignore.

    quant / tweak: the specs, or their dicts as an earlier record holds them (an export)."""
    return {
        "format_version": FORMAT_VERSION,
        "normtweak_version": __version__,
        "format": f"compressed-tensors/{CT_FORMAT}",
        "quant": _spec_dict(quant),
        "tweak": _spec_dict(tweak),
        "calibration_sha256": calibration_sha256,
        "modules": quantization_map(model),
        **(extra or {}),
    }


def _spec_dict(spec) -> dict | None:
    """A spec as a dict (specs and the dicts of an earlier record alike); None stays None."""
    if spec is None or isinstance(spec, dict):
        return spec
    return spec.as_dict()


def _ignored_linears(model: nn.Module, quantized: set[str]) -> list[str]:
    return [n for n, m in model.named_modules()
            if type(m) is nn.Linear and n not in quantized]


def save_quantized(model: nn.Module, tokenizer, path: str | os.PathLike, *,
                   quant: QuantSpec | None = None, tweak: TweakSpec | None = None,
                   calibration_sha256: str | None = None, extra: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write a compressed-tensors pack-quantized folder (vLLM, SGLang, transformers read it).

    `load_quantized` rebuilds it exactly. Our provenance goes to normtweak_quantization.json
    with the sha256 of model.safetensors, so a truncated or altered file is refused on load.
    Unrepresentable models (act-order permuted groups) are refused before anything is written.

    `path` must not exist or be an empty folder; overwrite=True replaces a folder only if
    normtweak wrote it (normtweak.outputs: nothing normtweak did not write is deleted).
    """
    return write_library_folder(path, lambda p: _save_quantized(
        model, tokenizer, p, quant, tweak, calibration_sha256, extra), overwrite, "save_quantized")


def _save_quantized(model, tokenizer, path, quant, tweak, calibration_sha256, extra) -> Path:
    names = quantized_module_names(model)
    if not names:
        raise ValueError("the model has no QuantLinear modules: quantize it before save_quantized")
    record = provenance(model, quant, tweak, calibration_sha256, extra)
    if arch.get_adapter(model).conv1d:
        return _save_native(model, tokenizer, path, record)
    tensors = quantized_state_dict(model)
    schemes = {n: scheme_key(model.get_submodule(n)) for n in names}
    warn_serving_kernels(model)
    ignore = _ignored_linears(model, set(names))
    return write_quantized_folder(model, tokenizer, path, tensors, record,
                                  lambda folder: write_config(folder, schemes, ignore))


def _save_native(model: nn.Module, tokenizer, path, record: dict) -> Path:
    """Our own layout, for families compressed-tensors cannot hold (GPT-2's Conv1D linears).

    The weights go to normtweak_model.safetensors, a name transformers never looks for, so
    a plain `from_pretrained` fails loudly ("no file named model.safetensors") instead of
    loading random linears; `load_quantized` reads it.
    """
    record = {**record, "format": NATIVE_METHOD}

    def write(tmp: Path) -> None:
        weights = tmp / NATIVE_WEIGHTS_NAME
        save_model(model, str(weights), metadata={"format": "pt"})
        config = model.config.to_dict()
        config["architectures"] = [type(model).__name__]
        config["quantization_config"] = {"quant_method": NATIVE_METHOD,
                                         "format_version": FORMAT_VERSION}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        record["weights_sha256"] = file_sha256(weights)
        record["files_sha256"] = {weights.name: record["weights_sha256"]}  # one per weight file
        (tmp / PROVENANCE_NAME).write_text(json.dumps(record, indent=2, sort_keys=True))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_folder(path, write)


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every QuantLinear turned back into an nn.Linear (the dequantized weight)."""
    from normtweak.quant.linear import QuantLinear

    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, QuantLinear):
            plain.set_submodule(name, module.to_linear())
    adapter = arch.get_adapter(plain)
    if adapter.conv1d:
        arch.linear_to_conv1d(plain, adapter)
    head, emb = adapter.get_head(plain), adapter.get_embeddings(plain)
    if getattr(plain.config, "tie_word_embeddings", False) and head is not None and emb is not None:
        if head.weight.data_ptr() != getattr(emb, "weight", head.weight).data_ptr():
            plain.config.tie_word_embeddings = False  # a quantized head no longer equals the embeddings
    return plain


def export_dequantized(model: nn.Module, tokenizer, path: str | os.PathLike,
                       dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Write a plain float folder that `AutoModelForCausalLM.from_pretrained` loads, no normtweak
    needed. `path` and `overwrite` follow save_quantized's rule."""
    return write_library_folder(path, lambda p: _export_dequantized(model, tokenizer, p, dtype),
                                overwrite, "export_dequantized")


def _export_dequantized(model, tokenizer, path, dtype) -> Path:
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
