"""Write a quantized model in the format a serving stack reads; convert between formats.

`write_model` writes one in-memory model to a new folder in any of SAVE_FORMATS;
`export_quantized` converts a folder (any format load_quantized reads) through it, with the
no-data-loss rule of normtweak.outputs (refuse a non-empty target unless overwriting,
replace only our own output, atomically). `source_format` says which format a folder is
in, so a model tweaked from someone else's checkpoint is saved back the way it came.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAVE_FORMATS = ("compressed-tensors", "gptq", "gguf", "float")
EXPORT_FORMATS = SAVE_FORMATS


def source_format(path: str | os.PathLike) -> dict:
    """The format of a quantized checkpoint: {"format": one of SAVE_FORMATS, and for GPTQ
    "gptq_version": 1 or 2}. normtweak's own (and older normtweak) folders count as
    compressed-tensors, the format normtweak saves by default."""
    from normtweak.io.load import _gguf_file, read_quantization_config

    path = Path(path)
    if _gguf_file(path) is not None:
        return {"format": "gguf"}
    qc = read_quantization_config(path)
    if qc["quant_method"] == "gptq":
        version = 2 if qc.get("checkpoint_format", "gptq") == "gptq_v2" else 1
        return {"format": "gptq", "gptq_version": version}
    return {"format": "compressed-tensors"}


def check_format(fmt: str, quant, linears) -> None:
    """Refuse, before any slow work, a model that format `fmt` cannot hold exactly.

    quant: the QuantSpec the model will be quantized with; linears: (name, in_features,
    out_features) of every layer it quantizes. The writers check again on the modules.
    """
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"format must be one of {SAVE_FORMATS}, got {fmt!r}")
    for name, in_features, out_features in linears:
        if fmt == "gptq":
            from normtweak.io.gptq import check_gptq_shape

            check_gptq_shape(name, quant.bits, in_features, out_features)
        elif fmt == "gguf":
            from normtweak.io.gguf import gguf_type_for

            gguf_type_for(name, quant.bits, quant.group_size, in_features, quant.symmetric)


@dataclass(frozen=True)
class Provenance:
    """What a saved model records about how it was made (normtweak_quantization.json).

    quant / tweak: the specs, or their dicts as an earlier record holds them (an export);
    calibration_sha256: of the calibration ids; extra: more keys for the record.
    """

    quant: Any = None
    tweak: Any = None
    calibration_sha256: str | None = None
    extra: dict | None = None


def write_model(model, tokenizer, path: str | os.PathLike, fmt: str, *,
                provenance: Provenance | None = None, gptq_version: int = 2,
                gguf_type: str | None = None, overwrite: bool = False) -> Path:
    """Write `model` (with QuantLinears) to the new folder `path` in format `fmt`.

    compressed-tensors: vLLM, SGLang, transformers; gptq: gptq_v2 (or v1 when exact);
    gguf: llama.cpp Q4_0/Q4_1/Q8_0; float: dequantized weights. Each refuses what it
    cannot hold exactly, before writing anything. Our provenance goes beside it.
    `path` and `overwrite` follow save_quantized's rule (normtweak.outputs).
    """
    from normtweak.io.save import export_dequantized, save_quantized
    from normtweak.outputs import write_library_folder

    if fmt not in SAVE_FORMATS:
        raise ValueError(f"format must be one of {SAVE_FORMATS}, got {fmt!r}")
    if fmt == "float":
        return export_dequantized(model, tokenizer, path, overwrite=overwrite)
    made = provenance or Provenance()
    if fmt == "compressed-tensors":
        return save_quantized(model, tokenizer, path, quant=made.quant, tweak=made.tweak,
                              calibration_sha256=made.calibration_sha256, extra=made.extra,
                              overwrite=overwrite)
    return write_library_folder(path, lambda p: _write_other(
        model, tokenizer, p, fmt, made, gptq_version, gguf_type), overwrite, "write_model")


def _write_other(model, tokenizer, path, fmt, made: Provenance, gptq_version, gguf_type) -> Path:
    from normtweak.io.save import provenance

    record = provenance(model, made.quant, made.tweak, made.calibration_sha256, made.extra)
    if fmt == "gptq":
        from normtweak.io.gptq import write_gptq

        return write_gptq(model, tokenizer, path, record, version=gptq_version)
    from normtweak.io.gguf import write_gguf

    return write_gguf(model, tokenizer, path, record, qtype=gguf_type)


def export_quantized(model_dir: str | os.PathLike, fmt: str, save_dir: str | os.PathLike, *,
                     overwrite: bool = False, gptq_version: int = 2,
                     gguf_type: str | None = None, dtype: str | None = None) -> Path:
    """Write the quantized model in `model_dir` to `save_dir` in format `fmt`.

    fmt: compressed-tensors (vLLM, SGLang, transformers), gptq (gptq_v2, or v1 when exact),
    gguf (llama.cpp: Q4_0, Q4_1, Q8_0), float (dequantized, any stack; `dtype` "bfloat16" or
    "float16" halves it, default the scales' dtype: float32 for normtweak's own folders). A
    non-empty save_dir is refused unless overwrite (and then only our own earlier output is
    replaced).
    """
    from normtweak.config import QuantSpec
    from normtweak.io.format import read_provenance
    from normtweak.io.load import load_quantized
    from normtweak.outputs import check_target, write_folder

    if fmt not in SAVE_FORMATS:
        raise ValueError(f"format must be one of {SAVE_FORMATS}, got {fmt!r}")
    if dtype is not None and fmt != "float":
        raise ValueError(f"--dtype applies to --format float, not {fmt}")
    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    if Path(save_dir).resolve() == Path(model_dir).resolve():
        raise ValueError("save_dir must differ from the model folder being exported")
    check_target(save_dir, overwrite, "--save_dir")  # before the (slow) load
    model, tokenizer = load_quantized(model_dir)
    old = read_provenance(Path(model_dir)) or {}
    quant = old.get("quant")
    if fmt == "compressed-tensors" and quant:
        quant = QuantSpec.from_record(quant)
    if fmt == "float":
        import torch

        from normtweak.io.save import export_dequantized

        def write(p):
            return export_dequantized(model, tokenizer, p,
                                      dtype=getattr(torch, dtype) if dtype else None)
    else:
        def write(p):
            made = Provenance(quant, old.get("tweak"), old.get("calibration_sha256"),
                              extra={"exported_from": str(model_dir)})
            return write_model(model, tokenizer, p, fmt, provenance=made,
                               gptq_version=gptq_version, gguf_type=gguf_type)
    return write_folder(save_dir, write, overwrite=overwrite, command=f"export --format {fmt}",
                        flag="--save_dir", source=str(model_dir))
