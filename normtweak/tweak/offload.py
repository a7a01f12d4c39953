"""Models larger than RAM: blocks stay on the meta device until the pipeline reaches them.

`load_lazily(folder)` builds the model with accelerate's `init_empty_weights` (no
memory for parameters), loads everything outside the blocks (embeddings, final norm,
head) from the folder's safetensors, and returns a `BlockLoader`. The pipeline calls
`loader(index, block)` just before block `index`'s turn; it reads only that block's
tensors from the (memory-mapped) safetensors files. After quantization a block holds
packed integer weights, so resident memory grows by about bits/32 of the float model,
not by the float model. Sharded checkpoints (model.safetensors.index.json) work too.

Plain `from_pretrained` in transformers 5 already initialises on meta and loads
tensors straight into place (`low_cpu_mem_usage` is always on), so its peak is about
one copy of the weights; this loader's peak is about one float block.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from normtweak import arch

INDEX_NAME = "model.safetensors.index.json"


def weight_map(folder: str | os.PathLike) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (single file or sharded index)."""
    from safetensors import safe_open

    from normtweak.io.load import shard_files

    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        shard_files(folder, index)  # refuses an index that names files outside the folder
        entries = json.loads(index.read_text())["weight_map"]
        return {name: folder / file for name, file in entries.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no .safetensors weights (lazy loading reads only "
                                f"safetensors)")
    out = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            out.update({name: file for name in f.keys()})  # noqa: SIM118 (safe_open has no __iter__)
    return out


def _read(files: dict[str, Path], names: list[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Read `names` from their files, opening each file once; floats cast to dtype."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    out = {}
    for file, group in by_file.items():
        with safe_open(str(file), framework="pt") as f:
            for name in group:
                t = f.get_tensor(name)
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise ValueError(f"{file}: {name} holds NaN/Inf values: the model's weights "
                                     f"are damaged")
                # always a private copy: a tensor backed by the file's map keeps it resident
                out[name] = t.to(dtype, copy=True) if t.is_floating_point() else t.clone()
    return out


def _assign(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    from accelerate.utils import set_module_tensor_to_device

    for name, value in tensors.items():
        set_module_tensor_to_device(model, name, "cpu", value=value)


class BlockLoader:
    """Fills block `index` of a lazily built model from disk, once (a no-op afterwards)."""

    def __init__(self, model: nn.Module, files: dict[str, Path], dtype: torch.dtype) -> None:
        self.model, self.files, self.dtype = model, files, dtype
        names = {id(m): n for n, m in model.named_modules()}
        blocks = arch.get_adapter(model).get_blocks(model)
        self.prefixes = [names[id(b)] + "." for b in blocks]

    def fingerprint(self) -> str:
        """A checksum of the weights on disk, counted as weights_fingerprint counts the tensors
        in memory (one tensor read at a time from the memory-mapped files: one pass over the
        model). A resume compares it, so a model changed on disk is not resumed as a hybrid."""
        import hashlib

        from safetensors import safe_open

        from normtweak.tweak.checkpoint import tensor_digest

        digest = hashlib.sha256()
        by_file: dict[Path, list[str]] = {}
        for name, file in self.files.items():
            by_file.setdefault(file, []).append(name)
        for file in sorted(by_file):
            with safe_open(str(file), framework="pt") as f:
                for name in sorted(by_file[file]):
                    tensor_digest(digest, name, f.get_tensor(name))
        return digest.hexdigest()

    def __call__(self, index: int, block: nn.Module) -> None:
        if not any(p.is_meta for p in block.parameters()):
            return
        prefix = self.prefixes[index]
        wanted = [prefix + n for n, p in block.named_parameters() if p.is_meta]
        missing = [n for n in wanted if n not in self.files]
        if missing:
            raise ValueError(f"block {index}: the checkpoint has no tensors {missing[:3]}")
        _assign(self.model, _read(self.files, wanted, self.dtype))


def load_lazily(folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer or None, BlockLoader): a causal LM whose blocks load on demand."""
    import transformers
    from accelerate import init_empty_weights

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json in it)")
    config = transformers.AutoConfig.from_pretrained(folder)
    adapter = arch.get_adapter(config)
    if adapter.conv1d or not adapter.causal:
        raise ValueError(f"lazy loading supports causal models with nn.Linear layers, not "
                         f"{config.model_type!r}; load it with normtweak.load_model")
    with init_empty_weights():  # parameters on meta; buffers (rotary tables) real
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    files = weight_map(folder)
    blocks = arch.get_adapter(model).get_blocks(model)
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    outside = [n for n, p in model.named_parameters() if id(p) not in in_blocks]
    _assign(model, _read(files, [n for n in outside if n in files], dtype))
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.is_meta and id(p) not in in_blocks]
    if left:
        raise ValueError(f"{folder}: the checkpoint has no tensors for {left[:3]}")
    model.config.name_or_path = str(folder)
    tokenizer = None
    if (folder / "tokenizer_config.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return arch.prepare_model(model), tokenizer, BlockLoader(model, files, dtype)
