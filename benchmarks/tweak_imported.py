"""Norm tweaking as a plug-in on someone else's quantized model: perplexity before and after.

    OMP_NUM_THREADS=1 python benchmarks/tweak_imported.py \
        --quantized ../peer-models/wikipedia-llmc-gptq-w4g64-128x512 \
                    ../peer-models/wikipedia-autoround-rtn-w3g64-128x512

Each checkpoint (any format normtweak reads: compressed-tensors from llm-compressor, GPTQ
from AutoRound, GPTQ/GGUF/normtweak) keeps its codes and scales; the float model gives the
targets and only the norms are trained (the paper's preset unless --preset joint), on the
same calibration windows accuracy.py and peers.py use (--calib-samples x --calib-len
train tokens, seed --seed). The tweaked model is saved in the format the checkpoint came
in, read back, and scored again, so the "after" column is the served model's perplexity.
Validation and test perplexity on the first --max-windows 1024-token windows. Runs are
cached under --runs-dir keyed by settings (--fresh redoes them).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# `python benchmarks/tweak_imported.py` puts benchmarks/ (not the repository) first on
# sys.path, so `import normtweak` would find whatever checkout is pip-installed (editable:
# possibly another worktree, changing under a long run). Import this repository's.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import normtweak
from normtweak.calib.text import calibration_from_text
from normtweak.config import RunSpec, TweakSpec
from normtweak.evaluate.perplexity import perplexity
from normtweak.evaluate.report import write_json
from normtweak.evaluate.taskdata import corpus_documents
from normtweak.io import load_quantized
from normtweak.io.export import Provenance, source_format, write_model
from normtweak.io.scales import format_scale_dtype
from normtweak.loading.float import load_model
from normtweak.loading.foreign import attach_quantized, imported_spec, load_quantized_linears
from normtweak.tweak.pipeline import tweak_model

# "joint" here is plain MSE, what the imported runs measured (TweakSpec's joint preset has
# since moved to rel_mse). "paper" is Algorithm 1 with keep_better ON: the runs on
# AutoRound-50's checkpoints were made so (their JSONs record keep_better true), the earlier
# ones on llm-compressor's and AutoRound-RTN's before keep_better existed (off).
PRESETS = {"paper": dict(lr=1e-4, scale=5.0, iters=1, batch_size=1, loss="dist",
                         target="quantized_input", quant_params="none", keep_better=True),
           "joint": dict(lr=1e-4, scale=5.0, iters=3, batch_size=8, loss="mse",
                         target="float_input", quant_params="clip_round", keep_better=True)}


def evaluate(model, tokenizer, texts, max_windows) -> dict:
    with torch.no_grad():
        return {split: perplexity(model, tokenizer, t, window=1024, max_windows=max_windows).ppl
                for split, t in texts.items()}


def run_one(path: Path, model, tokenizer, texts, calib, args) -> dict:
    fmt = source_format(path)["format"]
    imported = load_quantized_linears(path)
    quant = imported_spec(imported)
    before_model = copy.deepcopy(model)
    attach_quantized(before_model, path)
    before = evaluate(before_model, tokenizer, texts, args.max_windows)
    del before_model
    print(f"{path.name} ({fmt}, W{quant.bits} g{quant.group_size}): before val "
          f"{before['validation']:.2f} test {before['test']:.2f}", flush=True)
    tweaked = copy.deepcopy(model)
    spec = TweakSpec(**PRESETS[args.preset])
    t = time.perf_counter()
    dtype = format_scale_dtype(fmt)
    tweak_model(tweaked, calib, quant, spec,
                RunSpec(seed=args.seed, scale_dtype=str(dtype).removeprefix("torch.")
                        if dtype is not None else None), imported=imported)
    seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:  # score the model as saved and read back
        write_model(tweaked, tokenizer, Path(tmp) / "out", fmt,
                    provenance=Provenance(quant=quant, tweak=spec))
        served, _ = load_quantized(Path(tmp) / "out")
    after = evaluate(served, tokenizer, texts, args.max_windows)
    print(f"  after: val {after['validation']:.2f} test {after['test']:.2f} ({seconds:.0f} s)",
          flush=True)
    return {"checkpoint": path.name, "format": fmt, "bits": quant.bits,
            "group_size": quant.group_size, "preset": args.preset, "tweak": spec.as_dict(),
            "before": before, "after": after, "tweak_s": seconds,
            "normtweak": str(Path(normtweak.__file__).parent)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quantized", nargs="+", required=True, help="checkpoint folders")
    p.add_argument("--model", default="smollm2-135m", help="the float model they came from")
    p.add_argument("--text", default="wikipedia")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default="results/tweak_imported_runs")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--output", default="results/tweak_imported.json")
    args = p.parse_args(argv)
    paths = [Path(q) for q in args.quantized]
    missing = [str(q) for q in paths if not q.exists()]
    if missing:  # before the model loads
        p.error(f"no such checkpoint: {', '.join(missing)} (benchmarks/peers.py writes them to "
                f"../peer-models)")
    command = "python benchmarks/tweak_imported.py " + " ".join(
        map(shlex.quote, sys.argv[1:] if argv is None else argv))
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, cwd=ROOT,
                         text=True).stdout.strip()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    texts = {s: corpus_documents(args.text, s) for s in ("validation", "test")}  # per document
    calib = calibration_from_text(tokenizer, args.text, args.calib_samples, args.calib_len,
                                  seed=args.seed).input_ids
    rows = []
    for path in paths:
        key = hashlib.sha256(json.dumps([path.name, args.model, args.text, args.preset,
                                         args.calib_samples, args.calib_len, args.max_windows,
                                         args.seed]).encode()).hexdigest()[:10]
        cache = Path(args.runs_dir) / f"{path.name}_{args.preset}_{key}.json"
        if cache.exists() and not args.fresh:
            row = json.loads(cache.read_text())
        else:
            row = {**run_one(path, model, tokenizer, texts, calib, args), "git": rev,
                   "calib": {"samples": args.calib_samples, "len": args.calib_len,
                             "seed": args.seed}, "max_windows": args.max_windows}
            write_json(cache, row)
        rows.append(row)
    print(f"\n{args.model}; {args.preset} tweak on {args.calib_samples} x {args.calib_len} "
          f"{args.text} train tokens (seed {args.seed}); first {args.max_windows} x 1024-token "
          f"windows")
    print("| checkpoint | format | before val | after val | before test | after test | "
          "tweak s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['format']} | {r['before']['validation']:.2f} | "
              f"{r['after']['validation']:.2f} | {r['before']['test']:.2f} | "
              f"{r['after']['test']:.2f} | {r['tweak_s']:.0f} |")
    print(f"\nreproduce: {command}")
    result = {"command": command, "args": vars(args), "rows": rows}
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
