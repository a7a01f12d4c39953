"""Convert a quantized folder (any format load_quantized reads) into another format."""

from __future__ import annotations

import os
from pathlib import Path

EXPORT_FORMATS = ("compressed-tensors", "gptq", "gguf", "float")


def check_target(save_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty target folder (or a file) unless overwriting was asked for."""
    if save_dir.exists() and not save_dir.is_dir():
        raise ValueError(f"{save_dir} exists and is not a folder")
    if save_dir.is_dir() and any(save_dir.iterdir()) and not overwrite:
        raise ValueError(f"{save_dir} is not empty: choose another folder or pass --overwrite")


def export_quantized(model_dir: str | os.PathLike, fmt: str, save_dir: str | os.PathLike, *,
                     overwrite: bool = False, gptq_version: int = 2,
                     gguf_type: str | None = None) -> Path:
    """Write the quantized model in `model_dir` to `save_dir` in format `fmt`.

    fmt: compressed-tensors (vLLM, SGLang, transformers), gptq (gptq_v2, or v1 when exact),
    gguf (llama.cpp: Q4_0, Q4_1, Q8_0), float (dequantized, any stack).
    """
    from normtweak.io.format import read_provenance
    from normtweak.io.load import load_quantized
    from normtweak.io.save import export_dequantized, provenance, save_quantized

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    save_dir = Path(save_dir)
    check_target(save_dir, overwrite)
    if save_dir.resolve() == Path(model_dir).resolve():
        raise ValueError("save_dir must differ from the model folder being exported")
    model, tokenizer = load_quantized(model_dir)
    old = read_provenance(Path(model_dir)) or {}
    keep = {"tweak": old.get("tweak"), "calibration_sha256": old.get("calibration_sha256"),
            "extra": {"exported_from": str(model_dir)}}
    if fmt == "float":
        return export_dequantized(model, tokenizer, save_dir)
    if fmt == "compressed-tensors":
        from normtweak.config import QuantSpec

        fields = set(QuantSpec.__dataclass_fields__)
        quant = (QuantSpec(**{k: v for k, v in old["quant"].items() if k in fields})
                 if old.get("quant") else None)
        return save_quantized(model, tokenizer, save_dir, quant=quant, **keep)
    record = provenance(model, None, keep["tweak"], keep["calibration_sha256"], keep["extra"])
    record["quant"] = old.get("quant")
    if fmt == "gptq":
        from normtweak.io.gptq import write_gptq

        return write_gptq(model, tokenizer, save_dir, record, version=gptq_version)
    from normtweak.io.gguf import write_gguf

    return write_gguf(model, tokenizer, save_dir, record, qtype=gguf_type)
