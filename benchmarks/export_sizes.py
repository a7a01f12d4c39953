"""Disk size of each export format for SmolLM2-135M (RTN W4 g64) against the float model.

Also checks that every export loads back (load_quantized) with the same perplexity-free
check: logits on a fixed batch, max abs difference to the quantized model.

    python benchmarks/export_sizes.py --bits 4 --group-size 64
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from normtweak.config import QuantSpec, RunSpec
from normtweak.evaluate.report import markdown_table, write_json
from normtweak.io import (
    export_dequantized,
    export_quantized,
    load_quantized,
    round_scales,
    save_quantized,
)
from normtweak.loading.float import load_model
from normtweak.quant.model import quantize_model


def folder_bytes(path: Path) -> int:
    """Bytes of the weight files (safetensors / gguf) in a folder; tokenizer files excluded."""
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".gguf"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--output", default="results/export_sizes.json")
    args = ap.parse_args()
    command = "python benchmarks/export_sizes.py " + " ".join(sys.argv[1:])
    model, tok = load_model(args.model)
    ids = torch.arange(100, 164).reshape(2, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            copy.deepcopy(model).to(dtype).save_pretrained(tmp / name)  # .to() rounds buffers too
            rows.append({"format": f"float ({name})", "bytes": folder_bytes(tmp / name)})
        spec = QuantSpec(bits=args.bits, group_size=args.group_size, symmetric=args.symmetric)
        quantize_model(model, spec, run=RunSpec(progress=False))
        round_scales(model, torch.float16)  # GPTQ and GGUF store fp16 scales: every export exact
        with torch.no_grad():
            ref = model(input_ids=ids).logits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_quantized(model, tok, tmp / "ct", quant=spec)
            export_quantized(tmp / "ct", "gptq", tmp / "gptq")
            export_quantized(tmp / "ct", "gguf", tmp / "gguf")
        export_dequantized(model, tok, tmp / "deq16", dtype=torch.bfloat16)
        for label, folder in (("compressed-tensors pack-quantized", "ct"), ("gptq (gptq_v2)", "gptq"),
                              ("gguf", "gguf")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back, _ = load_quantized(tmp / folder)
            with torch.no_grad():
                diff = (back(input_ids=ids).logits - ref).abs().max().item()
            rows.append({"format": label, "bytes": folder_bytes(tmp / folder),
                         "max_logit_diff_after_reload": diff})
        rows.append({"format": "float export of the quantized model (bfloat16)",
                     "bytes": folder_bytes(tmp / "deq16")})
    base = rows[0]["bytes"]
    for r in rows:
        r["MB"] = round(r["bytes"] / 1e6, 1)
        r["vs_float32"] = round(r["bytes"] / base, 3)
    print(markdown_table(rows, [("format", "format"), ("MB", "MB"), ("vs_float32", "vs float32"),
                                ("max_logit_diff_after_reload", "max |logit diff| on reload")]))
    write_json(args.output, {"command": command, "model": args.model, "spec": spec.as_dict(),
                             "rows": rows})


if __name__ == "__main__":
    main()
