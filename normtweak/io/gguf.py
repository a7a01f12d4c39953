"""GGUF (llama.cpp) export and import of Llama-family models, through PyPI `gguf`.

Block types that hold our codes exactly (blocks of 32 inputs, fp16 scales):
  Q4_0  symmetric 4-bit: w = d * (q - 8)          bytes: d, qs[16] (q[j] | q[j+16] << 4)
  Q4_1  asymmetric 4-bit: w = d * q + m (m = -d*z) bytes: d, m, qs[16]
  Q8_0  symmetric 8-bit: w = d * q, q int8         bytes: d, q[32]
Our group of g inputs (g a multiple of 32, or a whole row) becomes g/32 blocks that share
its scale. q_proj / k_proj rows are permuted as llama.cpp's converter does (rotary halves
interleaved); transformers' GGUF loader permutes them back.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from normtweak.io.format import ScaleRoundingWarning, rounding_summary

GGUF_NAME = "model.gguf"
BLOCK = 32
TYPES = ("Q4_0", "Q4_1", "Q8_0")


def choose_type(name: str, q, asked: str | None) -> str:
    """The GGUF type that holds QuantLinear `q` exactly, or ValueError saying what would be lost."""
    from normtweak.io.format import is_symmetric

    return gguf_type_for(name, q.bits, q.group_size, q.in_features, is_symmetric(q), asked)


def gguf_type_for(name: str, bits: int, group_size: int, in_features: int, symmetric: bool,
                  asked: str | None = None) -> str:
    """choose_type from a layer's description alone (checked before any slow work)."""
    g = group_size if group_size > 0 else in_features
    if g % BLOCK or in_features % BLOCK:
        raise ValueError(f"{name}: GGUF stores one scale per {BLOCK} inputs; group size {g} is not "
                         f"a multiple of {BLOCK}, so the scales of partial blocks would be lost. "
                         f"Quantize with a group size of 32, 64, 128 or per channel")
    if bits == 8 and not symmetric:
        raise ValueError(f"{name}: GGUF's 8-bit type Q8_0 is symmetric; this model's asymmetric "
                         f"zero points would be lost. Quantize 8-bit with symmetric=True")
    if bits not in (4, 8):
        raise ValueError(f"{name}: GGUF holds 4-bit (Q4_0, Q4_1) and 8-bit (Q8_0) codes exactly; "
                         f"its {bits}-bit k-quants re-quantize the scales, which would lose "
                         f"this model's scales. Export with --format float or compressed-tensors")
    natural = "Q8_0" if bits == 8 else ("Q4_0" if symmetric else "Q4_1")
    if asked is not None and asked != natural and not (asked == "Q4_1" and natural == "Q4_0"):
        raise ValueError(f"{name}: {asked} cannot hold {bits}-bit "
                         f"{'symmetric' if symmetric else 'asymmetric'} codes; use {natural}")
    return asked or natural


def _half(t: torch.Tensor, what: str, name: str) -> np.ndarray:
    h = t.to(torch.float16)
    if not torch.equal(h.float(), t.float()):
        err = (h.float() - t.float()).abs().max().item()
        warnings.warn(f"{name}: GGUF stores {what} as float16; rounding moves them by up to "
                      f"{err:.3g}", ScaleRoundingWarning, stacklevel=4)
    return h.numpy()


def encode_blocks(q, qtype: str, name: str, rows: torch.Tensor | None = None) -> np.ndarray:
    """QuantLinear -> uint8 [out, in/32 * block bytes] in GGUF's block layout (rows permuted)."""
    codes = q.codes()
    scale = q.scales.float()[:, q.g_idx.long()]  # per input column
    zero = q.zeros.float()[:, q.g_idx.long()]
    if rows is not None:
        codes, scale, zero = codes[rows], scale[rows], zero[rows]
    out, inf = codes.shape
    nb = inf // BLOCK
    codes = codes.reshape(out, nb, BLOCK)
    d = scale.reshape(out, nb, BLOCK)[..., 0]
    z = zero.reshape(out, nb, BLOCK)[..., 0]
    parts = [_half(d, "scales", name).view(np.uint8).reshape(out, nb, 2)]
    if qtype == "Q8_0":
        parts.append((codes - 128).to(torch.int8).numpy().view(np.uint8))
    else:
        if qtype == "Q4_1":
            parts.append(_half(-d * z, "block minimums (-scale * zero)", name)
                         .view(np.uint8).reshape(out, nb, 2))
        else:
            codes = codes - (z.round().to(torch.int32)[..., None] - 8)  # zero 8 by construction
        c = codes.to(torch.uint8)
        parts.append((c[..., :16] | (c[..., 16:] << 4)).numpy())
    return np.concatenate(parts, axis=-1).reshape(out, -1)


def _qk_rows(name: str, out: int, config) -> torch.Tensor | None:
    """llama.cpp's q/k row order: within each head, the two rotary halves interleaved."""
    heads = config.num_attention_heads
    if name.endswith("q_proj"):
        n = heads
    elif name.endswith("k_proj"):
        n = getattr(config, "num_key_value_heads", None) or heads
    else:
        return None
    idx = torch.arange(out)
    return idx.reshape(n, 2, out // n // 2).swapaxes(1, 2).reshape(out)


def _metadata(writer, model: nn.Module, tokenizer) -> None:
    c = model.config
    blocks = c.num_hidden_layers
    writer.add_name(getattr(c, "_name_or_path", "") or "normtweak")
    writer.add_block_count(blocks)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(getattr(c, "num_key_value_heads", None) or c.num_attention_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    rope = (getattr(c, "rope_parameters", None) or {}).get("rope_theta") or getattr(
        c, "rope_theta", 10000.0)
    writer.add_rope_freq_base(float(rope))
    writer.add_rope_dimension_count(getattr(c, "head_dim", None)
                                    or c.hidden_size // c.num_attention_heads)
    writer.add_vocab_size(c.vocab_size)
    if tokenizer is not None:
        from normtweak.io.gguf_vocab import add_tokenizer

        add_tokenizer(writer, tokenizer, c.vocab_size)


def check_gguf_family(family: str) -> None:
    """GGUF export writes the Llama family's tensor names and metadata only."""
    if family != "llama":
        raise ValueError(f"GGUF export supports the Llama family (SmolLM2, Llama, Mistral); "
                         f"this model is {family}")


def gguf_tensors(model: nn.Module, qtype: str | None):
    """(gguf name, numpy array, raw type or None) for every tensor; refuses before writing."""
    import gguf

    from normtweak import arch
    from normtweak.quant.linear import QuantLinear

    check_gguf_family(arch.get_adapter(model).family)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    out, types = [], {}
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    for name, q in quantized.items():
        types[name] = choose_type(name, q, qtype)
    with rounding_summary("GGUF", len(quantized)):
        for name, q in quantized.items():
            target = names.get_name(name)
            if target is None:
                raise ValueError(f"{name} has no GGUF tensor name")
            rows = _qk_rows(name, q.out_features, model.config)
            data = encode_blocks(q, types[name], name, rows)
            out.append((f"{target}.weight", data, gguf.GGMLQuantizationType[types[name]]))
    for key, t in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in quantized:
            continue
        target = names.get_name(module)
        if target is None:
            continue  # rotary tables and other buffers llama.cpp recomputes
        if module == "lm_head" and getattr(model.config, "tie_word_embeddings", False):
            continue
        t = t.detach().float()
        rows = _qk_rows(module, t.shape[0], model.config) if t.dim() == 2 else None
        if rows is not None:
            t = t[rows]
        array = t.to(torch.float16 if t.dim() == 2 else torch.float32).numpy()
        out.append((f"{target}.{leaf}", array, None))
    return out, types


def write_gguf(model: nn.Module, tokenizer, path, record: dict, qtype: str | None = None) -> Path:
    """Write save_dir/model.gguf (+ our provenance); refuses what GGUF cannot hold exactly."""
    import gguf

    from normtweak.common.files import atomic_folder
    from normtweak.io.format import PROVENANCE_NAME

    if qtype is not None and qtype not in TYPES:
        raise ValueError(f"GGUF type must be one of {TYPES}, got {qtype!r}")
    tensors, types = gguf_tensors(model, qtype)
    record = {**record, "format": f"gguf/{'+'.join(sorted(set(types.values())))}"}

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp / GGUF_NAME), "llama")
        _metadata(writer, model, tokenizer)
        for name, data, raw in tensors:
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        (tmp / PROVENANCE_NAME).write_text(json.dumps(record, indent=2, sort_keys=True))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_folder(path, write)


def _decode_blocks(raw: np.ndarray, qtype: str, out: int, inf: int):
    """uint8 blocks [out, ...] -> (codes int32 [out, in], scale [out, in/32], zero [out, in/32])."""
    nb = inf // BLOCK
    b = torch.from_numpy(np.ascontiguousarray(raw).reshape(out, nb, -1).copy())
    d = b[..., 0:2].contiguous().view(torch.float16).reshape(out, nb).float()
    if qtype == "Q8_0":
        codes = b[..., 2:].contiguous().view(torch.int8).to(torch.int32) + 128
        return codes.reshape(out, inf), d, torch.full_like(d, 128.0)
    start = 4 if qtype == "Q4_1" else 2
    qs = b[..., start:].to(torch.int32)
    codes = torch.cat([qs & 0xF, qs >> 4], dim=-1).reshape(out, inf)
    if qtype == "Q4_0":
        return codes, d, torch.full_like(d, 8.0)
    m = b[..., 2:4].contiguous().view(torch.float16).reshape(out, nb).float()
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return codes, d, torch.where(d == 0, torch.zeros_like(m), -m / safe)


def _inverse(rows: torch.Tensor | None) -> torch.Tensor | None:
    return None if rows is None else torch.argsort(rows)


def read_gguf(path: Path):
    """(model with QuantLinears, None): exact types become codes, others are dequantized."""
    import gguf
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from normtweak import arch
    from normtweak.config import QuantSpec
    from normtweak.io.build import assemble, empty_model
    from normtweak.io.format import build_quant_linear

    meta = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    if meta.get("model_type") != "llama":
        raise ValueError(f"{path}: GGUF import supports the Llama family, not {meta.get('model_type')}")
    config = transformers.LlamaConfig(**{k: v for k, v in meta.items() if k != "model_type"})
    config.architectures = ["LlamaForCausalLM"]
    model = arch.prepare_model(empty_model(config, path))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    hf = {names.get_name(n): n for n, _ in model.named_modules() if names.get_name(n)}
    quantized, rest, lossy = {}, {}, []
    for t in gguf.GGUFReader(str(path)).tensors:
        base, _, leaf = t.name.rpartition(".")
        module = hf.get(base)
        if module is None:
            continue
        target = model.get_submodule(module)
        qtype = t.tensor_type.name
        if isinstance(target, nn.Linear) and leaf == "weight":
            rows = _inverse(_qk_rows(module, target.out_features, config))
            if qtype in TYPES and target.in_features % BLOCK == 0:
                codes, d, z = _decode_blocks(t.data, qtype, target.out_features,
                                             target.in_features)
                if rows is not None:
                    codes, d, z = codes[rows], d[rows], z[rows]
                spec = QuantSpec(bits=8 if qtype == "Q8_0" else 4, group_size=BLOCK,
                                 symmetric=qtype != "Q4_1")
                quantized[module] = build_quant_linear(codes, d, z, spec)
                continue
            if qtype not in ("F32", "F16", "BF16"):
                lossy.append(f"{t.name} ({qtype})")
        w = torch.from_numpy(np.array(gguf.dequantize(t.data, t.tensor_type))).float()
        w = w.reshape(tuple(reversed([int(x) for x in t.shape])))
        if isinstance(target, nn.Linear) and leaf == "weight":
            rows = _inverse(_qk_rows(module, w.shape[0], config))
            if rows is not None:
                w = w[rows]
        rest[f"{module}.{leaf}"] = w
    if lossy:
        warnings.warn(f"{len(lossy)} GGUF tensors have types normtweak's QuantLinear cannot hold "
                      f"({', '.join(lossy[:3])}...): they are dequantized to float32", stacklevel=3)
    return assemble(model, quantized, rest, path)
