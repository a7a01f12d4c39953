"""Architecture adapters: where each model family keeps its blocks, norms and linears.

One table (`ADAPTERS`) maps a transformers `config.model_type` to an `Adapter`.
Paths are relative to `model.base_model` (the bare transformer under a task head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Adapter:
    """Where one model family keeps its parts (dotted paths under `model.base_model`)."""

    family: str
    model_types: tuple[str, ...]
    blocks: str
    embeddings: str
    final_norm: str | None
    causal: bool = True
    norm_offset: float = 0.0  # Gemma: the RMSNorm weight is used as (offset + w)
    block_returns_tuple: bool = False
    conv1d: bool = False  # GPT-2 stores linears as transposed Conv1D

    def base(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        return _get(self.base(model), self.blocks)

    def get_embeddings(self, model: nn.Module) -> nn.Module:
        return _get(self.base(model), self.embeddings)

    def get_final_norm(self, model: nn.Module) -> nn.Module | None:
        return _get(self.base(model), self.final_norm) if self.final_norm else None

    def get_head(self, model: nn.Module) -> nn.Module | None:
        get = getattr(model, "get_output_embeddings", None)
        return get() if get is not None else None


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("gpt2", ("gpt2",), "h", "wte", "ln_f", conv1d=True),
    Adapter("opt", ("opt",), "decoder.layers", "decoder.embed_tokens", "decoder.final_layer_norm"),
    Adapter("bloom", ("bloom",), "h", "word_embeddings", "ln_f", block_returns_tuple=True),
    Adapter(
        "llama",
        ("llama", "mistral", "qwen2", "qwen3", "smollm3"),
        "layers",
        "embed_tokens",
        "norm",
    ),
    Adapter(
        "gemma", ("gemma", "gemma2", "gemma3_text"), "layers", "embed_tokens", "norm",
        norm_offset=1.0,
    ),
    Adapter("bert", ("bert",), "encoder.layer", "embeddings", None, causal=False),
    Adapter("distilbert", ("distilbert",), "transformer.layer", "embeddings", None, causal=False),
    # normtweak.studies.precision.classifier.TextClassifier (the precision study's own model)
    Adapter("nt_classifier", ("nt_classifier",), "blocks", "embed", "norm", causal=False),
)
_BY_TYPE = {t: a for a in ADAPTERS for t in a.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def model_context(model: nn.Module) -> int | None:
    """The longest sequence the model takes, from its config (None when unbounded)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in _CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def get_adapter(model_or_config: Any) -> Adapter:
    """The adapter for a model (or its config); ValueError naming the supported types."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_TYPE:
        raise ValueError(
            f"unsupported architecture {model_type!r}; normtweak supports model_type in "
            f"{supported_model_types()}"
        )
    return _BY_TYPE[model_type]


def _get(root: nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# --- parts of a block -------------------------------------------------------------


@dataclass(frozen=True)
class NormInfo:
    """What a norm module computes: kind 'rms' or 'layer', eps, weight offset, bias."""

    kind: str
    eps: float
    offset: float = 0.0
    has_weight: bool = True
    has_bias: bool = False


def is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or name.endswith("RMSNorm") or name.endswith("LayerNorm")


def block_norms(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """The norm modules inside a block, in module order (these are what tweaking trains)."""
    return [(n, m) for n, m in block.named_modules() if n and is_norm(m)]


def block_linears(block: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear modules inside a block, in module order (what quantizers replace)."""
    return [(n, m) for n, m in block.named_modules() if isinstance(m, nn.Linear)]


def describe_norm(module: nn.Module, adapter: Adapter) -> NormInfo:
    """Kind, eps and weight offset of a transformers (or normtweak) norm module."""
    eps = None
    for attr in ("eps", "variance_epsilon", "epsilon"):
        if hasattr(module, attr):
            eps = float(getattr(module, attr))
            break
    if eps is None:
        raise ValueError(f"cannot find eps on norm module {type(module).__name__}")
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    is_layer = isinstance(module, nn.LayerNorm) or getattr(module, "kind", None) == "layer"
    offset = float(getattr(module, "offset", adapter.norm_offset if not is_layer else 0.0))
    return NormInfo(
        kind="layer" if is_layer else "rms",
        eps=eps,
        offset=offset,
        has_weight=weight is not None,
        has_bias=bias is not None,
    )


# --- GPT-2 Conv1D <-> nn.Linear -----------------------------------------------------


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace transformers' Conv1D (weight [in, out]) by an equal nn.Linear, in place."""
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_f, out_f = child.weight.shape
                lin = nn.Linear(in_f, out_f, bias=child.bias is not None)
                lin.to(device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    lin.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(parent, name, lin)
    return model


def linear_to_conv1d(model: nn.Module, adapter: Adapter) -> nn.Module:
    """Inverse of `conv1d_to_linear` for the block linears of a Conv1D family (GPT-2)."""
    if not adapter.conv1d:
        return model
    from transformers.pytorch_utils import Conv1D

    for block in adapter.get_blocks(model):
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    conv = Conv1D(child.out_features, child.in_features)
                    conv.to(device=child.weight.device, dtype=child.weight.dtype)
                    with torch.no_grad():
                        conv.weight.copy_(child.weight.t())
                        if child.bias is not None:
                            conv.bias.copy_(child.bias)
                    setattr(parent, name, conv)
    return model


def prepare_model(model: nn.Module) -> nn.Module:
    """Make a model ready for normtweak: eval mode, no KV cache, Conv1D as nn.Linear."""
    adapter = get_adapter(model)
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    if adapter.conv1d:
        conv1d_to_linear(model)
    return model
