"""Load a float model ready for normtweak: an offline asset, a local folder or a hub id.

The name is resolved by normtweak.assets.resolve_model (offline models are converted or
located there); a folder holding a quantized checkpoint is refused with a message that
says how to load it (normtweak.io.load knows those formats, hence this module's place).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError

from normtweak.arch import get_adapter, prepare_model, supported_model_types
from normtweak.assets import resolve_model
from normtweak.hub import hub_kwargs
from normtweak.io.load import READ_METHODS, check_config, read_quantization_config

UNUSED_MISSING = ("pooler.",)  # an encoder's pooler: normtweak never runs it


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
):
    """Load (model, tokenizer), ready for normtweak (eval mode, no KV cache).

    Decoders load with AutoModelForCausalLM, encoders (BERT, DistilBERT) with AutoModel.
    A model whose weights lack tensors its config needs (they would be random) or hold
    tensors it does not have is refused, naming them, unless allow_missing; NaN/Inf in any
    weight is refused naming the tensor.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(name_or_path, cache_dir)
    local = Path(source).is_dir()
    hub = {} if local else hub_kwargs(source, str(name_or_path))
    if local:
        _check_raw_config(Path(source) / "config.json")
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
    except (TypeError, StrictDataclassError) as err:  # a field of the wrong type
        raise ValueError(f"{source}/config.json: {_first_line(err)}") from err
    check_config(config, f"{source}/config.json")
    _refuse_quantized(config, source)
    adapter = get_adapter(config)
    auto = AutoModelForCausalLM if adapter.causal else AutoModel
    try:
        model, info = auto.from_pretrained(source, dtype=dtype, output_loading_info=True, **hub)
    except SafetensorError as err:
        raise ValueError(f"the weights in {source} cannot be read ({err}): a truncated or "
                         f"corrupt .safetensors file; download or convert the model again") from err
    if not allow_missing:
        _refuse_incomplete(model, info, source)
    refuse_non_finite(model, source)
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


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _refuse_incomplete(model, info: dict, source: str) -> None:
    """Refuse weights that lack tensors the config needs, or hold tensors it has no place for.

    Tensors of a task head the loaded class does not have (an MLM head under AutoModel)
    and an encoder's unused pooler are not counted."""
    children = {name for name, _ in model.named_children()}
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(UNUSED_MISSING))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if k.split(".")[0] in children)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) the config needs are not in its weights and "
                     f"would be random ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) of its weights have no place in the model "
                     f"its config describes ({_names(unexpected)})")
    raise ValueError(f"{source}: {'; '.join(parts)}: the weights are incomplete or do not "
                     f"belong to this config.json; fix the folder (or load it with "
                     f"allow_missing=True if that is meant)")


def _names(keys: list[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def refuse_non_finite(model, source: str) -> None:
    """ValueError naming the first parameter or buffer that holds NaN or Inf."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, t in tensors.items():
        if t.is_floating_point() and not t.is_meta and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{source}: the weight {name} holds {bad} NaN/Inf value(s): the "
                             f"checkpoint is damaged or diverged; use a finite model")


def _check_raw_config(path: Path) -> None:
    """Sizes in config.json that are no positive integers, named before transformers divides
    by them (a JSON error is left to AutoConfig's own message)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(raw, dict):
        check_config(raw, path)
