"""Load a quantized folder (ours in any version, or another toolkit's) into QuantLinear modules.

The model is built with empty (meta) parameters, the quantized linears are replaced by
QuantLinears made from the checkpoint's tensors, and every other tensor is assigned
from the file: nothing is randomly initialized first.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open

from normtweak import arch
from normtweak.common.files import recover
from normtweak.config import QuantSpec
from normtweak.io.build import assemble, empty_model
from normtweak.io.format import (
    LEGACY_METHOD,
    NATIVE_METHOD,
    NATIVE_WEIGHTS_NAME,
    PROVENANCE_NAME,
    WEIGHTS_NAME,
    check_version,
    file_sha256,
    read_provenance,
)
from normtweak.quant.linear import set_quant_linear_options
from normtweak.quant.model import replace_with_shells

READ_METHODS = ("compressed-tensors", "gptq", NATIVE_METHOD, LEGACY_METHOD)


_POSITIVE_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "vocab_size", "max_position_embeddings", "num_key_value_heads", "head_dim",
                  "n_embd", "n_layer", "n_head", "n_positions", "ffn_dim")


def check_config(config: transformers.PretrainedConfig | dict, where) -> None:
    """ValueError naming `where` when a size of the config (an object, or config.json's dict
    before transformers builds one from it) is not a positive integer."""
    for name in _POSITIVE_INTS:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")


def read_config(path: str | os.PathLike) -> dict:
    """config.json of a model folder, as a dict."""
    config_file = recover(path) / "config.json"  # (a killed replacement left it aside)
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    if isinstance(config, dict):
        return config
    raise ValueError(f"{config_file} is not a JSON object")


def read_quantization_config(path: str | os.PathLike) -> dict:
    """The quantization_config of a quantized folder, checked for a method normtweak reads."""
    qc = read_config(path).get("quantization_config") or {}
    method = qc.get("quant_method")
    if method not in READ_METHODS:
        raise ValueError(f"{path} is not a quantized model normtweak reads (quantization_config "
                         f"quant_method {method!r}; expected one of {READ_METHODS}), and was not "
                         f"saved by normtweak; load a float model with normtweak.load_model")
    if method in (LEGACY_METHOD, NATIVE_METHOD):
        check_version(path, qc.get("format_version"))
    read_provenance(Path(path))  # a newer normtweak's record is refused here
    return qc


def is_quantized_folder(path: str | os.PathLike) -> bool:
    """True if `path` holds a checkpoint `load_quantized` reads."""
    try:
        read_quantization_config(path)
    except (FileNotFoundError, ValueError):
        return False
    return True


def shard_files(path: Path, index: Path) -> list[Path]:
    """The shard files an index names, each checked to lie inside the folder `path`."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{index} is not a shard index (a JSON object with a 'weight_map' of "
                         f"tensor -> file): {err}") from err
    inside = path.resolve()
    for shard in shards:
        if (not isinstance(shard, str) or not shard or Path(shard).is_absolute()
                or ".." in Path(shard).parts or inside not in (path / shard).resolve().parents):
            raise ValueError(f"{index} names the shard {shard!r}, which is not a file inside "
                             f"{path}: refused (an index may only name files in its folder)")
    return [path / shard for shard in shards]


def check_sha256(path: Path, files: list[Path], sha256: str | None,
                 files_sha256: dict | None) -> None:
    """Check every weight file against the hashes recorded when it was saved (if any)."""
    if files_sha256:
        for f in files:
            recorded = files_sha256.get(f.relative_to(path).as_posix())
            if recorded is None:
                raise ValueError(f"{f} has no sha256 in {PROVENANCE_NAME}, so it cannot be "
                                 f"checked: the folder was altered after it was saved; save "
                                 f"the model again")
            if file_sha256(f) != recorded:
                raise ValueError(f"{f} does not match the sha256 recorded when it was saved: "
                                 f"the file is truncated or was altered; save the model again")
    elif sha256 and len(files) > 1:
        raise ValueError(f"{path}: its record holds one sha256 for the weights, which are now in "
                         f"{len(files)} shards, so they cannot be checked: the folder was "
                         f"resharded after it was saved; save the model again")
    elif sha256 and file_sha256(files[0]) != sha256:
        raise ValueError(f"{files[0]} does not match the sha256 recorded when it was saved: the "
                         f"file is truncated or was altered; save the model again")


def read_tensors(path: Path, verify: bool, sha256: str | None,
                 name: str = WEIGHTS_NAME, files_sha256: dict | None = None
                 ) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors (or its shards), sha256-checked when recorded."""
    single, index = path / name, path / f"{name}.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = shard_files(path, index)
    else:
        raise FileNotFoundError(f"{single} is missing")
    if verify:
        check_sha256(path, files, sha256, files_sha256)
    tensors = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                tensors.update({k: st.get_tensor(k) for k in st.keys()})  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{f} cannot be read ({err}); it is truncated or corrupt") from err
    return tensors


def _legacy_modules(model, qc, tensors, record):
    """Format version 1: our buffer names, spec in config.json's quantization_config."""
    warnings.warn("this folder was saved by normtweak < 0.2 (quant_method 'normtweak'): plain "
                  "transformers loads it with randomly initialized linears (its load report "
                  "lists them as MISSING). Convert it once with `normtweak export --model OLD "
                  "--format compressed-tensors --save_dir NEW`", FutureWarning, stacklevel=3)
    spec = QuantSpec.from_record(qc)
    replace_with_shells(model, spec, qc["quantized_modules"])
    return {}, tensors


def _native_modules(model, qc, tensors, record):
    """Version-2 native layout: our buffer names, per-module specs in the provenance map."""
    if record is None:
        raise FileNotFoundError(f"{PROVENANCE_NAME} is missing: it lists the quantized modules")
    for name, m in record["modules"].items():
        spec = QuantSpec.from_record({k: m[k] for k in ("bits", "group_size", "symmetric")})
        replace_with_shells(model, spec, [name])
    return {}, tensors


def _ct_modules(model, qc, tensors, record):
    from compressed_tensors.utils import match_named_modules

    from normtweak.io.compressed import decode, parse_config

    config = parse_config(qc)
    quantized = {}
    for scheme in config.config_groups.values():
        for name, module in match_named_modules(model, scheme.targets, config.ignore):
            if f"{name}.weight_packed" not in tensors or name in quantized:
                continue
            prefix = f"{name}."
            own = {k[len(prefix):]: tensors.pop(k) for k in list(tensors)
                   if k.startswith(prefix) and k[len(prefix):].startswith("weight_")}
            quantized[name] = decode(own, scheme.weights, tensors.pop(f"{name}.bias", None))
    left = [k for k in tensors if k.endswith(".weight_packed")]
    if left:
        raise ValueError(f"{left[0]} matches no config group of quantization_config")
    return quantized, tensors


def _gptq_modules(model, qc, tensors, record):
    from normtweak.io.gptq import read_gptq_modules

    return read_gptq_modules(model, qc, tensors)


_READERS = {LEGACY_METHOD: _legacy_modules, NATIVE_METHOD: _native_modules,
            "compressed-tensors": _ct_modules,
            "gptq": _gptq_modules}


def _gguf_file(path: Path) -> Path | None:
    """The GGUF file to read: `path` itself, or the only .gguf in a folder without config.json."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise ValueError(f"{path} holds several .gguf files: pass the one to load")
        return found[0] if found else None
    return None


def load_quantized(path: str | os.PathLike, device: str = "cpu", verify: bool = True,
                   cache: bool = False):
    """Rebuild a quantized folder with QuantLinear modules: returns (model, tokenizer).

    Reads normtweak folders (compressed-tensors, and the version-1 "normtweak" layout),
    compressed-tensors pack-quantized folders from any toolkit, GPTQ folders (v1/v2), and
    GGUF files (Llama family; Q4_0/Q4_1/Q8_0 become codes, other types are dequantized).
    cache: keep each layer's dequantized weight between forwards (faster, but a float copy
    of every weight: off, so the loaded model holds its packed weights only).
    """
    model, tokenizer = _load_quantized(path, device, verify)
    set_quant_linear_options(model, cache=cache)
    return model, tokenizer


def _load_quantized(path, device: str, verify: bool):
    path = recover(path)  # a replacement killed halfway leaves the old folder aside
    gguf_file = _gguf_file(path)
    if gguf_file is not None:
        from normtweak.io.gguf import read_gguf

        model = read_gguf(gguf_file)
        folder = gguf_file.parent
        tokenizer = (transformers.AutoTokenizer.from_pretrained(folder)
                     if (folder / "tokenizer_config.json").is_file() else None)
        return model.to(device).eval(), tokenizer
    qc = read_quantization_config(path)
    record = read_provenance(path)
    sha = (record or {}).get("weights_sha256") or qc.get("weights_sha256")
    name = NATIVE_WEIGHTS_NAME if qc["quant_method"] == NATIVE_METHOD else WEIGHTS_NAME
    tensors = read_tensors(path, verify, sha, name, (record or {}).get("files_sha256"))
    check_config(read_config(path), path / "config.json")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except (TypeError, StrictDataclassError) as err:  # a field of the wrong type
        raise ValueError(f"{path / 'config.json'}: {' '.join(str(err).split())}") from err
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = arch.prepare_model(empty_model(config, path))
    quantized, rest = _READERS[qc["quant_method"]](model, qc, tensors, record)
    model = assemble(model, quantized, rest, path)
    model.config.quantization_config = qc
    tokenizer = None
    if (path / "tokenizer_config.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return model.to(device).eval(), tokenizer
