"""Building a model around tensors read from a file: the model class with empty (meta)
parameters, then the quantized linears put in and every other tensor assigned, so nothing is
randomly initialized first. Every reader (normtweak.io.load, normtweak.io.gguf) uses it."""

from __future__ import annotations

import torch
import transformers
from torch import nn
from transformers import PreTrainedModel


def _named_class(arch_name, path):
    """The transformers model class config.json's architectures[0] names (None: unknown)."""
    if arch_name is None:
        return None
    found = getattr(transformers, arch_name, None) if isinstance(arch_name, str) else None
    if not isinstance(arch_name, str) or found is not None and not (
            isinstance(found, type) and issubclass(found, PreTrainedModel)):
        raise ValueError(f"{path}/config.json: architectures[0] is {arch_name!r}, which is not "
                         f"a transformers model class; fix config.json")
    return found


def empty_model(config: transformers.PretrainedConfig, path) -> nn.Module:
    """The model class of `config` with meta parameters (buffers such as rotary tables real)."""
    from accelerate import init_empty_weights

    arch_name = (config.architectures or [None])[0]
    model_cls = _named_class(arch_name, path)
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForMaskedLM):
        if model_cls is None and type(config) in auto._model_mapping:
            model_cls = auto._model_mapping[type(config)]
    if model_cls is None:
        raise ValueError(f"{path}: unknown model class {arch_name!r} in config.json")
    with init_empty_weights(include_buffers=False):
        model = model_cls(config)
    return model


def assemble(model: nn.Module, quantized: dict[str, nn.Module], rest: dict[str, torch.Tensor],
             path) -> nn.Module:
    """Put the QuantLinears in, assign every other tensor, tie, and check nothing is left empty."""
    for name, module in quantized.items():
        model.set_submodule(name, module)
    tied = getattr(model.config, "tie_word_embeddings", False)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if tied and emb is not None and head is not None:  # a writer may keep either copy
        names = {id(m): n for n, m in model.named_modules()}
        emb_key, head_key = f"{names[id(emb)]}.weight", f"{names[id(head)]}.weight"
        if emb_key not in rest and head_key in rest:
            rest[emb_key] = rest[head_key]
    _, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"{path}: tensors the model does not have: {sorted(unexpected)[:5]}")
    if tied:
        model.tie_weights()
    empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise ValueError(f"{path}: the checkpoint has no values for {sorted(empty)[:5]}")
    return model
