"""What a saved folder holds, and the pieces every format reader and writer shares.

A folder written by `save_quantized` (format version 2): config.json with a
compressed-tensors `quantization_config` (see normtweak.io.compressed), model.safetensors,
tokenizer files, and normtweak_quantization.json, our provenance, which other loaders
ignore: format version, normtweak version, the run's quant and tweak settings, the
calibration hash, the sha256 of model.safetensors, and a quantization map built from
the modules themselves (name -> bits, group size, symmetric, shapes, scale dtype).

GPT-2 (Conv1D linears, which compressed-tensors does not quantize) is saved in our own
layout instead: quant_method "normtweak-native", weights in normtweak_model.safetensors,
so plain transformers fails loudly rather than loading random linears.

Format version 1 (before compressed-tensors) put everything in config.json under
quant_method "normtweak" with our buffer names; `load_quantized` still reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from normtweak.config import QuantSpec

FORMAT_VERSION = 2
LEGACY_METHOD = "normtweak"  # format version 1; never written any more
WEIGHTS_NAME = "model.safetensors"
NATIVE_METHOD = "normtweak-native"  # version 2, only for families compressed-tensors can't hold
NATIVE_WEIGHTS_NAME = "normtweak_model.safetensors"
PROVENANCE_NAME = "normtweak_quantization.json"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def quantized_module_names(model: nn.Module) -> list[str]:
    from normtweak.quant.linear import QuantLinear

    return [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]


def quantization_map(model: nn.Module) -> dict[str, dict]:
    """name -> what each QuantLinear actually holds (read from the module, not a spec)."""
    from normtweak.quant.linear import QuantLinear

    return {
        name: {"bits": m.bits, "group_size": m.group_size, "symmetric": is_symmetric(m),
               "in_features": m.in_features, "out_features": m.out_features,
               "scale_dtype": str(m.scales.dtype).removeprefix("torch."),
               "act_order_groups": not torch.equal(m.g_idx.cpu(), _default_g_idx(m))}
        for name, m in model.named_modules() if isinstance(m, QuantLinear)
    }


def is_symmetric(q) -> bool:
    """True when every zero point is 2^(b-1): the signed zero point is 0 everywhere."""
    return bool((q.zeros == float(1 << (q.bits - 1))).all())


def _default_g_idx(m) -> torch.Tensor:
    from normtweak.quant.linear import default_g_idx

    return default_g_idx(m.in_features, m.group_size)


def read_provenance(folder: Path) -> dict | None:
    """normtweak_quantization.json of a folder (None if absent), checked for its version."""
    path = Path(folder) / PROVENANCE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    check_version(folder, data.get("format_version"))
    return data


def check_version(folder, version) -> None:
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{folder} was saved in normtweak format version {version}, newer than "
                         f"this normtweak reads ({FORMAT_VERSION}): upgrade normtweak")


def build_quant_linear(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                       spec: QuantSpec, g_idx: torch.Tensor | None = None,
                       bias: torch.Tensor | None = None):
    """A QuantLinear holding codes int [out, in], scale/zero [out, G] (no zero-filled init)."""
    from normtweak.quant.linear import QuantLinear, default_g_idx
    from normtweak.quant.pack import pack

    out_f, in_f = codes.shape
    dtype = scale.dtype if scale.dtype in (torch.float16, torch.bfloat16) else torch.float32
    q = QuantLinear(in_f, out_f, spec, bias=bias is not None, scale_dtype=dtype, device="meta")
    q.qweight = pack(codes, spec.bits)
    q.scales = scale.to(dtype).reshape(out_f, -1).contiguous()
    q.zeros = zero.to(dtype).reshape(out_f, -1).contiguous()
    q.g_idx = (g_idx.to(torch.int32) if g_idx is not None
               else default_g_idx(in_f, spec.group_size))
    if bias is not None:
        q.bias = bias.to(dtype)
    return q


class ScaleRoundingWarning(UserWarning):
    """A format stores a layer's scales in float16 and rounding moves them."""


@contextmanager
def rounding_summary(fmt: str, total: int):
    """Inside, each layer's ScaleRoundingWarning is collected; at the end one warning says how
    many of the `total` layers' values moved and by how much at most (other warnings pass on
    unchanged)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    moved = [w for w in caught if issubclass(w.category, ScaleRoundingWarning)]
    for w in caught:
        if w not in moved:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if moved:
        layers = {str(w.message).split(":", 1)[0] for w in moved}
        worst = max(float(m.group(1)) for w in moved
                    if (m := re.search(r"by up to ([0-9.eE+-]+)", str(w.message))))
        warnings.warn(f"{fmt} stores scales as float16: rounding moved the values of "
                      f"{len(layers)} of {total} quantized layers by up to {worst:.3g}, so the weights "
                      f"served differ slightly from normtweak's. Tweak with --save-format "
                      f"{fmt.lower()} (scales rounded before tuning) to serve exactly what was "
                      f"tuned", ScaleRoundingWarning, stacklevel=3)
