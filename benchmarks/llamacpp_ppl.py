"""Does llama.cpp compute what normtweak computes from our GGUF files? Perplexity of each
GGUF export under llama.cpp (llama-cpp-python) beside normtweak's own forward of the same file.

    OMP_NUM_THREADS=1 python benchmarks/llamacpp_ppl.py                  # Q4_0, Q4_1, Q8_0 + a tweak
    python benchmarks/llamacpp_ppl.py --configs 4:32:sym --tweak-samples 0   # RTN Q4_0 only

For each config (bits:group:sym|asym; GGUF holds groups of 32: Q4_0 = 4-bit symmetric, Q4_1 =
4-bit asymmetric, Q8_0 = 8-bit symmetric) SmolLM2 is quantized with RTN, and for the first
config also tweaked with the default joint method on --tweak-samples Wikipedia train windows;
each model is saved, exported with `export_quantized(..., "gguf", ...)`, and the one .gguf
file is scored twice on the same token windows by the one perplexity definition
(normtweak.evaluate.perplexity: each document from its BOS): once by `load_quantized` of the
GGUF file (PyTorch), once by llama.cpp through a thin adapter that returns llama.cpp's logits.
The two agree when llama.cpp reads every tensor, scale and the architecture as we wrote them;
they are not bit-equal because llama.cpp's CPU matmuls round the activations too (to F16
against F16 weights, to 8-bit blocks, Q8_0/Q8_1, against Q4_0/Q4_1/Q8_0 weights): the first
row, the float model written with F16 weights, measures the F16 part alone, and the column
"normtweak, 8-bit activations" rounds our own forward's QuantLinear inputs the way ggml's
block_q8_0 does, which should land on llama.cpp's number. A wrong tensor
layout or scale moves perplexity by orders of magnitude, not by a percent. Needs `pip install llama-cpp-python`.
Prints a Markdown table and writes --output (JSON).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import revision  # noqa: E402


class LlamaCppLM(nn.Module):
    """A GGUF file under llama.cpp, shaped like a transformers causal LM for `perplexity`:
    forward(input_ids) -> .logits [B, T, vocab] (float32, llama.cpp's own computation)."""

    def __init__(self, path: Path, config, n_ctx: int, threads: int):
        super().__init__()
        import llama_cpp

        self.config = config
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # where "the model" is
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx,
                                   logits_all=True, n_threads=threads, verbose=False)

    def forward(self, input_ids: torch.Tensor):
        rows = []
        for ids in input_ids.tolist():
            self.llm.reset()
            self.llm.eval(ids)
            rows.append(torch.from_numpy(np.array(self.llm.scores[: len(ids)], dtype=np.float32)))
        return SimpleNamespace(logits=torch.stack(rows))


def q8_blocks(x: torch.Tensor) -> torch.Tensor:
    """x rounded as llama.cpp's CPU rounds a matmul's activations against 4/8-bit weights
    (ggml's block_q8_0: per 32 inputs, d = max|x| / 127 stored as float16, q = round(x / d))."""
    shape = x.shape
    blocks = x.float().reshape(-1, shape[-1] // 32, 32)
    d = (blocks.abs().amax(-1, keepdim=True) / 127).half().float()
    q = torch.where(d > 0, torch.round(blocks / torch.where(d > 0, d, 1)), 0)
    return (q * d).reshape(shape).to(x.dtype)


def with_q8_activations(model: nn.Module):
    """Hooks that feed every QuantLinear q8_blocks(input); returns the handles."""
    from normtweak.quant.linear import QuantLinear

    return [m.register_forward_pre_hook(lambda _m, args: (q8_blocks(args[0]),))
            for m in model.modules() if isinstance(m, QuantLinear)]


def parse_config(text: str) -> tuple[int, int, bool]:
    bits, group, kind = text.split(":")
    if kind not in ("sym", "asym"):
        raise ValueError(f"config {text!r}: the third field is sym or asym")
    return int(bits), int(group), kind == "sym"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--configs", default="4:32:sym,4:32:asym,8:32:sym")
    p.add_argument("--tweak-samples", type=int, default=16,
                   help="also tweak the first config on this many 512-token windows (0: no)")
    p.add_argument("--split", default="test")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default="results/llamacpp_ppl.json")
    args = p.parse_args(argv)
    command = "python benchmarks/llamacpp_ppl.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    import llama_cpp

    from normtweak.calib.text import calibration_from_text
    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.evaluate.perplexity import perplexity
    from normtweak.evaluate.report import markdown_table, write_json
    from normtweak.evaluate.taskdata import corpus_documents
    from normtweak.io import export_quantized, load_quantized, save_quantized
    from normtweak.io.gguf import write_gguf
    from normtweak.loading.float import load_model
    from normtweak.quant.model import quantize_model
    from normtweak.tweak.pipeline import tweak_model

    docs = corpus_documents("wikipedia", args.split)
    tok = load_model(args.model)[1]
    jobs = [("float (F16 weights)", None)]
    for i, text in enumerate(args.configs.split(",")):
        bits, group, sym = parse_config(text)
        spec = QuantSpec(bits=bits, group_size=group, symmetric=sym, group_fallback=False)
        jobs.append(("rtn", spec))
        if i == 0 and args.tweak_samples > 0:
            jobs.append(("tweak (joint, default)", spec))
    calib = None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (method, spec) in enumerate(jobs):
            model = load_model(args.model)[0]
            t0 = time.perf_counter()
            if spec is None:  # llama.cpp's own arithmetic: the float model, 2-D weights in F16
                with torch.no_grad():
                    for prm in model.parameters():
                        if prm.dim() == 2:
                            prm.copy_(prm.half().float())
            elif method == "rtn":
                quantize_model(model, spec, run=RunSpec(progress=False))
            else:
                if calib is None:
                    calib = calibration_from_text(tok, "wikipedia", args.tweak_samples, 512,
                                                  0).input_ids
                tweak_model(model, calib, spec, TweakSpec(), run=RunSpec(progress=False))
            made_s = time.perf_counter() - t0
            ct, gg = Path(tmp) / f"ct{n}", Path(tmp) / f"gguf{n}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if spec is None:
                    write_gguf(model, tok, gg, record={})
                    ours = model
                else:
                    save_quantized(model, tok, ct, quant=spec)
                    export_quantized(ct, "gguf", gg)
                    ours, _ = load_quantized(gg)
            (path,) = gg.glob("*.gguf")
            with torch.no_grad():
                p_ours = perplexity(ours, tok, docs, window=args.window,
                                    max_windows=args.max_windows)
            p_q8 = None
            if spec is not None:  # our forward with llama.cpp's activation rounding
                hooks = with_q8_activations(ours)
                with torch.no_grad():
                    p_q8 = perplexity(ours, tok, docs, window=args.window,
                                      max_windows=args.max_windows).ppl
                for h in hooks:
                    h.remove()
            theirs = LlamaCppLM(path, ours.config, args.window, args.threads)
            p_theirs = perplexity(theirs, tok, docs, window=args.window,
                                  max_windows=args.max_windows)
            gguf_type = "F16" if spec is None else {
                (4, True): "Q4_0", (4, False): "Q4_1", (8, True): "Q8_0"}[(spec.bits, spec.symmetric)]
            row = {"method": method, "gguf_type": gguf_type,
                   "spec": None if spec is None else spec.as_dict(),
                   "gguf_MB": round(path.stat().st_size / 1e6, 1),
                   "ppl_normtweak": p_ours.ppl, "ppl_llamacpp": p_theirs.ppl,
                   "rel_diff_pct": 100 * (p_theirs.ppl / p_ours.ppl - 1),
                   "ppl_normtweak_q8_act": p_q8,
                   "rel_diff_q8_act_pct": None if p_q8 is None else 100 * (p_theirs.ppl / p_q8 - 1),
                   "tokens": p_ours.tokens, "made_s": made_s}
            rows.append(row)
            print(f"{method} {gguf_type}: normtweak {p_ours.ppl:.4f}  llama.cpp "
                  f"{p_theirs.ppl:.4f}", flush=True)
            del theirs, ours, model
    table = markdown_table(rows, [("method", "method"), ("gguf_type", "GGUF type"),
                                  ("gguf_MB", "file MB"), ("ppl_normtweak", "ppl (normtweak)"),
                                  ("ppl_llamacpp", "ppl (llama.cpp)"),
                                  ("rel_diff_pct", "llama.cpp vs normtweak (%)"),
                                  ("ppl_normtweak_q8_act", "ppl (normtweak, 8-bit activations)"),
                                  ("rel_diff_q8_act_pct", "llama.cpp vs that (%)")])
    caption = (f"{args.model} vs the Q4 reference weights; Wikipedia {args.split}, the first "
               f"{args.max_windows} windows of {args.window} tokens (each document from its "
               f"BOS); llama-cpp-python {llama_cpp.__version__}, CPU, {args.threads} thread(s)")
    print(f"\n{caption}\n\n{table}\n\nreproduce: {command}")
    result = {"command": command, "caption": caption, "revision": revision(), "rows": rows,
              "table": table}
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
