"""compressed-tensors "pack-quantized": the format vLLM, SGLang and transformers read.

Per quantized linear `<name>`, with b bits and our unsigned codes c, zero points z:
  <name>.weight_packed      int32 [out, ceil(in*b/32)]  c - 2^(b-1) as signed intb, densely
                            packed little-endian along the input dim (bit for bit our qweight)
  <name>.weight_scale       [out, G] (G = 1 for strategy "channel")
  <name>.weight_shape       int64 [2] = (out, in)
  <name>.weight_zero_point  asymmetric only: z - 2^(b-1), packed along the OUTPUT dim,
                            int32 [ceil(out*b/32), G]
  <name>.weight_g_idx       only when reading a checkpoint written with actorder "group"
config.json's quantization_config: quant_method "compressed-tensors", format
"pack-quantized", config_groups, ignore, quantization_status "compressed", version.
Packing and the config classes are compressed-tensors' own (pack_to_int32,
QuantizationConfig, ModelCompressor.update_config); this module only maps our buffers.
"""

from __future__ import annotations

import torch

from normtweak.config import QuantSpec
from normtweak.io.format import build_quant_linear, is_symmetric
from normtweak.quant.linear import QuantLinear, default_g_idx

CT_FORMAT = "pack-quantized"
CT_METHOD = "compressed-tensors"
#: compressed-tensors versions whose pack-quantized layout we write and read (dense packing
#: of 3/5/6/7-bit values started in 0.18; pinned in pyproject.toml).
CT_VERSIONS = ">=0.18,<0.21"


def scheme_key(q: QuantLinear) -> tuple[int, int, bool]:
    """(bits, group_size, symmetric) as compressed-tensors sees it (-1 = one scale per row).

    Per-tensor layers (group_size 0) keep one scale per row (repeated), so "channel" holds them.
    """
    return q.bits, q.group_size if q.group_size > 0 else -1, is_symmetric(q)


def check_representable(name: str, q: QuantLinear) -> None:
    """Raise ValueError if `q` cannot be written as pack-quantized without changing it."""
    if not torch.equal(q.g_idx.cpu(), default_g_idx(q.in_features, q.group_size)):
        raise ValueError(
            f"{name}: GPTQ act-order permuted the scale groups (g_idx is not column // "
            f"group_size); serving formats cannot store that. Quantize with "
            f"static_groups=True (act_order keeps its accuracy, groups stay contiguous)")
    z = q.zeros.float()
    if not torch.equal(z, z.round()) or z.min() < 0 or z.max() > (1 << q.bits) - 1:
        raise ValueError(f"{name}: zero points are not integer codes in [0, {(1 << q.bits) - 1}]")


def _signed(t: torch.Tensor, bits: int) -> torch.Tensor:
    return (t.to(torch.int32) - (1 << (bits - 1))).to(torch.int8)


def encode(q: QuantLinear) -> dict[str, torch.Tensor]:
    """The pack-quantized tensors of one QuantLinear (suffix -> tensor), bias excluded."""
    from compressed_tensors.compressors.pack_quantized import pack_to_int32

    bits, _, symmetric = scheme_key(q)
    out = {
        "weight_packed": pack_to_int32(_signed(q.codes(), bits), bits).contiguous(),
        "weight_scale": q.scales.detach().contiguous(),
        "weight_shape": torch.tensor([q.out_features, q.in_features], dtype=torch.int64),
    }
    if not symmetric:
        out["weight_zero_point"] = pack_to_int32(_signed(q.zeros.round(), bits), bits,
                                                 packed_dim=0).contiguous()
    return out


def decode(tensors: dict[str, torch.Tensor], args, bias: torch.Tensor | None) -> QuantLinear:
    """A QuantLinear from one module's pack-quantized tensors and its QuantizationArgs."""
    from compressed_tensors.compressors.pack_quantized import unpack_from_int32

    bits = args.num_bits
    out_f, in_f = (int(v) for v in tensors["weight_shape"].tolist())
    scale = tensors["weight_scale"]
    group_size = args.group_size if args.strategy == "group" else -1
    spec = QuantSpec(bits=bits, group_size=group_size, symmetric=bool(args.symmetric))
    signed = unpack_from_int32(tensors["weight_packed"], bits, torch.Size([out_f, in_f]))
    if "weight_zero_point" in tensors and not args.symmetric:
        zp = tensors["weight_zero_point"]
        if zp.dtype == torch.int32 and zp.shape[0] != out_f:  # packed along the output dim
            zp = unpack_from_int32(zp, bits, torch.Size([out_f, scale.shape[-1]]), packed_dim=0)
        zero = zp.to(torch.float32).reshape(out_f, -1) + (1 << (bits - 1))
    else:
        zero = torch.full((out_f, scale.shape[-1]), float(1 << (bits - 1)))
    if scale.dim() == 1:
        scale = scale.reshape(out_f, 1)
    return build_quant_linear(signed.to(torch.int32) + (1 << (bits - 1)), scale, zero, spec,
                              g_idx=tensors.get("weight_g_idx"), bias=bias)


def quantization_config(schemes: dict[str, tuple[int, int, bool]], ignore: list[str]):
    """compressed-tensors' QuantizationConfig for modules -> (bits, group_size, symmetric).

    One scheme: a single group targeting "Linear" with the other linears in `ignore`.
    Several: one group per scheme, each targeting its modules by exact name.
    """
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
    )

    by_key: dict[tuple, list[str]] = {}
    for name, key in schemes.items():
        by_key.setdefault(key, []).append(name)
    groups = {}
    for i, ((bits, group_size, symmetric), names) in enumerate(sorted(by_key.items())):
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric,
                                strategy="group" if group_size > 0 else "channel",
                                group_size=group_size if group_size > 0 else None)
        targets = ["Linear"] if len(by_key) == 1 else names
        groups[f"group_{i}"] = QuantizationScheme(targets=targets, weights=args)
    return QuantizationConfig(config_groups=groups, format=CT_FORMAT, ignore=sorted(ignore),
                              quantization_status=QuantizationStatus.COMPRESSED)


def write_config(folder, schemes: dict[str, tuple[int, int, bool]], ignore: list[str]) -> None:
    """Add quantization_config to folder/config.json the way compressed-tensors itself does."""
    from compressed_tensors.compressors import ModelCompressor

    ModelCompressor(quantization_config=quantization_config(schemes, ignore)).update_config(
        str(folder))


def parse_config(qc: dict):
    """compressed-tensors' QuantizationConfig from a config.json dict; refuse what we can't hold."""
    from compressed_tensors.quantization import QuantizationConfig

    config = QuantizationConfig.model_validate({k: v for k, v in qc.items()
                                                if k in QuantizationConfig.model_fields})
    if config.format not in (CT_FORMAT, "mixed-precision"):
        raise ValueError(f"compressed-tensors format {config.format!r} is not supported: "
                         f"normtweak reads {CT_FORMAT!r} (integer weights, 2..8 bits)")
    for name, scheme in config.config_groups.items():
        w = scheme.weights
        if w is None or w.type != "int" or not 2 <= w.num_bits <= 8:
            raise ValueError(f"config group {name!r}: only integer 2..8-bit weights are supported")
        if w.strategy not in ("group", "channel"):
            raise ValueError(f"config group {name!r}: strategy {w.strategy!r} is not supported "
                             f"(group or channel)")
        if scheme.input_activations is not None:
            raise ValueError(f"config group {name!r} quantizes activations; normtweak's "
                             f"QuantLinear holds weight-only quantization")
    return config
