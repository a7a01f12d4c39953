"""GPTQ checkpoints (AutoGPTQ / GPTQModel layout, quant_method "gptq").

Per quantized linear `<name>` with b bits, G groups:
  <name>.qweight  int32 [in*b/32, out]   codes packed along the INPUT dim (dense
                  little-endian bit stream per output column; 3-bit straddles words)
  <name>.qzeros   int32 [G, out*b/32]    zero points packed along the output dim;
                  checkpoint_format "gptq" (v1) stores z - 1, "gptq_v2" stores z
  <name>.scales   float16 [G, out]
  <name>.g_idx    int32 [in]             group of each input column
  <name>.bias     float16 [out] (if any)
w[o, i] = scales[g_idx[i], o] * (code[i, o] - z[g_idx[i], o]).
v1 cannot hold a zero point of 0 (z - 1 = -1 wraps to 2^b - 1), so v1 is written only when
every zero point is >= 1 (always true for symmetric); v2 holds every case.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from normtweak.config import QuantSpec
from normtweak.io.format import ScaleRoundingWarning, build_quant_linear, rounding_summary
from normtweak.quant.pack import pack, unpack

GPTQ_FORMATS = {1: "gptq", 2: "gptq_v2"}


def check_gptq_shape(name: str, bits: int, in_features: int, out_features: int) -> None:
    """GPTQ packs whole int32 words along both dimensions (checked before any slow work)."""
    if (in_features * bits) % 32 or (out_features * bits) % 32:
        raise ValueError(f"{name}: GPTQ packs whole int32 words; in_features {in_features} and "
                         f"out_features {out_features} times {bits} bits must be multiples of 32")


def check_gptq(name: str, q, version: int) -> None:
    """Raise ValueError if `q` cannot be written exactly in GPTQ `version`."""
    check_gptq_shape(name, q.bits, q.in_features, q.out_features)
    if version == 1 and bool((q.zeros < 1).any()):
        raise ValueError(f"{name}: GPTQ v1 stores zero point - 1 and cannot hold a zero point of "
                         f"0 (this model has some); write checkpoint_format gptq_v2 instead")
    if q.scales.dtype != torch.float16:
        s = q.scales.float()
        if not torch.equal(s.half().float(), s):
            err = (s.half().float() - s).abs().max().item()
            warnings.warn(f"{name}: GPTQ stores scales as float16; rounding moves them by up "
                          f"to {err:.3g}", ScaleRoundingWarning, stacklevel=3)


def encode_gptq(q, version: int = 2) -> dict[str, torch.Tensor]:
    """The GPTQ tensors of one QuantLinear (suffix -> tensor)."""
    zeros = q.zeros.round().to(torch.int32) - (1 if version == 1 else 0)
    parts = {
        "qweight": pack(q.codes(), q.bits).t().contiguous(),
        "qzeros": pack(zeros.t() & ((1 << q.bits) - 1), q.bits),
        "scales": q.scales.t().to(torch.float16).contiguous(),
        "g_idx": q.g_idx.to(torch.int32).contiguous(),
    }
    if q.bias is not None:
        parts["bias"] = q.bias.to(torch.float16)
    return parts


def decode_gptq(parts: dict[str, torch.Tensor], bits: int, symmetric: bool, version: int,
                declared_group: int | None = None):
    """A QuantLinear from one module's GPTQ tensors. declared_group: the group size the
    checkpoint's config gives this module; a layer with one group keeps it (group size =
    in_features) instead of reading as one scale per output channel, the same numbers."""
    qweight, scales = parts["qweight"], parts["scales"]
    in_f, out_f = qweight.shape[0] * 32 // bits, qweight.shape[1]
    codes = unpack(qweight.t().contiguous(), bits, in_f)
    zeros = unpack(parts["qzeros"], bits, out_f).t()
    if version == 1:  # as v1 kernels read it: stored + 1, unmasked
        zeros = zeros + 1
    groups = scales.shape[0]
    one_group = in_f if declared_group == in_f else -1
    spec = QuantSpec(bits=bits, group_size=in_f // groups if groups > 1 else one_group,
                     symmetric=symmetric)
    g_idx = parts.get("g_idx")
    if spec.group_size == -1:
        g_idx = None
    return build_quant_linear(codes, scales.t().contiguous(), zeros.to(scales.dtype), spec,
                              g_idx=g_idx, bias=parts.get("bias"))


def gptq_config(bits: int, group_size: int, symmetric: bool, act_order: bool, version: int) -> dict:
    return {"quant_method": "gptq", "bits": bits, "group_size": group_size, "sym": symmetric,
            "desc_act": act_order, "checkpoint_format": GPTQ_FORMATS[version],
            "true_sequential": True}


def write_gptq(model: nn.Module, tokenizer, path, record: dict, version: int = 2) -> Path:
    """Write a GPTQ folder (checkpoint_format gptq_v2, or gptq (v1) when asked and exact)."""
    from normtweak.io.format import is_symmetric
    from normtweak.io.save import quantized_state_dict, write_quantized_folder
    from normtweak.quant.linear import QuantLinear

    if version not in GPTQ_FORMATS:
        raise ValueError(f"GPTQ version must be 1 or 2, got {version}")
    qs = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    bits = {m.bits for m in qs.values()}
    if len(bits) != 1:
        raise ValueError(f"GPTQ holds one bit width for the whole model; this one has "
                         f"{sorted(bits)}: export compressed-tensors instead")
    with rounding_summary("GPTQ", len(qs)):
        for name, q in qs.items():
            check_gptq(name, q, version)
    (bits,) = bits
    sizes = {n: m.group_size if m.group_size > 0 else -1 for n, m in qs.items()}
    group_size, dynamic = group_size_overrides(sizes)
    symmetric = all(is_symmetric(m) for m in qs.values())
    act_order = any(m.group_size > 0 and not torch.equal(
        m.g_idx.cpu(), torch.arange(m.in_features, dtype=torch.int32) // m.group_size)
        for m in qs.values())
    tensors = quantized_state_dict(model, lambda name, q: encode_gptq(q, version))
    config = gptq_config(bits, group_size, symmetric, act_order, version)
    if dynamic:
        config["dynamic"] = dynamic
    record = {**record, "format": f"gptq/{GPTQ_FORMATS[version]}"}
    return write_quantized_folder(model, tokenizer, path, tensors, record,
                                  lambda folder: _add_config(folder, config))


def group_size_overrides(sizes: dict[str, int]) -> tuple[int, dict]:
    """(the model's group size, GPTQModel `dynamic` overrides for the modules that differ).

    sizes: module name -> group size. The most common size is the model's; each other size
    gets one positive-match pattern ("+:regex" matched from the start of the module name, as
    GPTQModel and vLLM read `dynamic`), by leaf name where a leaf name has that size
    everywhere (`.*\\.down_proj$`), else by exact module names."""
    import re
    from collections import Counter

    base = Counter(sizes.values()).most_common(1)[0][0]
    by_leaf: dict[str, set[int]] = {}
    for name, g in sizes.items():
        by_leaf.setdefault(name.rsplit(".", 1)[-1], set()).add(g)
    dynamic = {}
    for g in sorted(set(sizes.values()) - {base}):
        names = sorted(n for n, size in sizes.items() if size == g)
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        if all(by_leaf[leaf] == {g} for leaf in leaves):
            pattern = r".*\.(?:" + "|".join(map(re.escape, leaves)) + ")$"
        else:
            pattern = "(?:" + "|".join(map(re.escape, names)) + ")$"
        dynamic[f"+:{pattern}"] = {"group_size": g}
    return base, dynamic


def _add_config(folder: Path, qc: dict) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["quantization_config"] = qc
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def declared_group_size(qc: dict, name: str) -> int | None:
    """The group size a GPTQ config gives module `name`: its `dynamic` override ("+:regex",
    matched from the start of the name, as GPTQModel reads it) or the config's own."""
    import re

    for pattern, override in (qc.get("dynamic") or {}).items():
        if pattern.startswith("+:") and re.match(pattern[2:], name) and "group_size" in override:
            return int(override["group_size"])
    g = qc.get("group_size")
    return int(g) if g is not None else None


def read_gptq_modules(model: nn.Module, qc: dict, tensors: dict):
    """(name -> QuantLinear, the other tensors) from a GPTQ checkpoint (v1 or v2)."""
    fmt = qc.get("checkpoint_format", "gptq")
    versions = {v: k for k, v in GPTQ_FORMATS.items()}
    if fmt not in versions:
        raise ValueError(f"GPTQ checkpoint_format {fmt!r} is not supported (gptq, gptq_v2)")
    bits = int(qc["bits"])
    symmetric = bool(qc.get("sym", True))
    quantized = {}
    for key in [k for k in tensors if k.endswith(".qweight")]:
        name = key[: -len(".qweight")]
        parts = {s: tensors.pop(f"{name}.{s}") for s in ("qweight", "qzeros", "scales", "g_idx",
                                                            "bias") if f"{name}.{s}" in tensors}
        q = decode_gptq(parts, bits, symmetric, versions[fmt], declared_group_size(qc, name))
        target = model.get_submodule(name)
        if (getattr(target, "in_features", q.in_features), getattr(
                target, "out_features", q.out_features)) != (q.in_features, q.out_features):
            raise ValueError(f"{name}: GPTQ tensors are {q.out_features}x{q.in_features}, the "
                             f"model's layer is {target.out_features}x{target.in_features}")
        quantized[name] = q
    return quantized, tensors
