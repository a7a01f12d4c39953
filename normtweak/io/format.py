"""The saved-model format: what `config.json`'s quantization_config records.

A saved folder: config.json (the model's config plus `quantization_config` with
quant_method "normtweak"), model.safetensors (packed integer weights, scales, zeros,
act-order indices, tweaked norms, every other float tensor), tokenizer files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from normtweak import arch
from normtweak.config import QuantSpec

FORMAT_VERSION = 1
QUANT_METHOD = "normtweak"
WEIGHTS_NAME = "model.safetensors"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def quantized_module_names(model: nn.Module) -> list[str]:
    from normtweak.quant.linear import QuantLinear

    return [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]


def replace_with_shells(root: nn.Module, spec: QuantSpec, names: list[str] | None = None) -> None:
    """Replace nn.Linears under `root` (the block linears, or `names`) by empty QuantLinears.

    The shells have the right buffer shapes; `load_state_dict` fills them.
    """
    from normtweak.quant.linear import QuantLinear
    from normtweak.quant.model import set_submodule

    targets = [(n, root.get_submodule(n)) for n in names] if names is not None else arch.block_linears(root)
    for name, lin in targets:
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"saved model lists {name!r} as quantized, but the architecture has "
                             f"a {type(lin).__name__} there")
        shell = QuantLinear(lin.in_features, lin.out_features, spec, bias=lin.bias is not None,
                            device=lin.weight.device)
        set_submodule(root, name, shell)
