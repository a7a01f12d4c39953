"""How big should the main job's calibration be? Validation perplexity and time of the default
method (the joint tweak in W4A16 on SmolLM2) over calibration samples x passes.

    OMP_NUM_THREADS=1 python benchmarks/main_job_size.py --samples 16,32,64 --passes 1,2,3
    python benchmarks/main_job_size.py --cached-only        # the table of finished runs

Every point tweaks a fresh copy of the float model with `QuantSpec()` / `TweakSpec(iters=P)`
(the defaults) on the first N of one set of 512-token windows (Wikipedia train split, or the
model's own samples with --calibration selfgen), and scores the first --max-windows
1024-token windows of the validation split (choices are made there; nothing here looks at
the test split). Wall and CPU seconds (time.process_time: every thread of this process) of
the tweak alone are recorded. Each point's JSON is cached under --runs-dir keyed by model,
the resolved specs, calibration, evaluation and the code revision; a point of another
revision is reused only with --any-revision, and the table says which revision made it.
Prints a Markdown table and writes --output.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def revision() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "normtweak"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def run_key(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def validation_ppl(model, tokenizer, docs, windows) -> float:
    from normtweak.evaluate.perplexity import perplexity

    with torch.no_grad():
        return perplexity(model, tokenizer, docs, max_windows=windows).ppl


def calibration(args, model, tokenizer) -> torch.Tensor:
    from normtweak.calib.generate import generate_calibration
    from normtweak.calib.text import calibration_from_text

    n = max(args.sample_list)
    if args.calibration == "text":
        return calibration_from_text(tokenizer, "wikipedia", n, args.seq_len, args.seed).input_ids
    return generate_calibration(model, tokenizer, num_samples=n, seq_len=args.seq_len,
                                seed=args.seed).input_ids


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--samples", default="16,32,64")
    p.add_argument("--passes", default="1,2,3")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--calibration", choices=["text", "selfgen"], default="text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-windows", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default=str(ROOT / "results" / "main_job_size_runs"))
    p.add_argument("--output", default=str(ROOT / "results" / "main_job_size.json"))
    p.add_argument("--cached-only", action="store_true", help="run nothing: the finished points")
    p.add_argument("--any-revision", action="store_true",
                   help="reuse a cached point made by another code revision")
    args = p.parse_args(argv)
    args.sample_list = [int(x) for x in args.samples.split(",")]
    args.pass_list = [int(x) for x in args.passes.split(",")]
    command = "python benchmarks/main_job_size.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.evaluate.report import write_json
    from normtweak.evaluate.taskdata import corpus_documents
    from normtweak.loading.float import load_model
    from normtweak.quant.model import quantize_model
    from normtweak.tweak.pipeline import tweak_model

    rev = revision()
    model, tok = load_model(args.model)
    docs = corpus_documents("wikipedia", "validation")  # = split_perplexity's documents
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    base = {"model": args.model, "quant": QuantSpec().as_dict(), "seq_len": args.seq_len,
            "calibration": args.calibration, "seed": args.seed, "max_windows": args.max_windows,
            "text": "wikipedia/validation"}
    ids = None if args.cached_only else calibration(args, model, tok)

    def cached_or_run(settings: dict, work) -> dict | None:
        path = runs / f"{settings['name']}_{run_key(settings)}.json"
        if path.is_file():
            row = json.loads(path.read_text())
            if row["revision"] == rev or args.any_revision or args.cached_only:
                return row
        if args.cached_only:
            return None
        row = {**settings, "revision": rev, "threads": args.threads, **work()}
        write_json(path, row)
        return row

    def baseline(kind):
        def work():
            m = copy.deepcopy(model)
            if kind == "rtn":
                quantize_model(m, QuantSpec(), run=RunSpec(progress=False))
            return {"val_ppl": validation_ppl(m, tok, docs, args.max_windows)}
        return work

    def point(n, passes):
        def work():
            m = copy.deepcopy(model)
            w0, c0 = time.perf_counter(), time.process_time()
            res = tweak_model(m, ids[:n], QuantSpec(), TweakSpec(iters=passes))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            print(f"N={n} passes={passes}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
            return {"tweak_wall_s": wall, "tweak_cpu_s": cpu, "load": os.getloadavg(),
                    "blocks_put_back": sum(b.kept_start for b in res.blocks),
                    "val_ppl": validation_ppl(m, tok, docs, args.max_windows)}
        return work

    rows = []
    for kind in ("float", "rtn"):
        row = cached_or_run({**base, "name": kind}, baseline(kind))
        if row:
            rows.append(row)
    for n in args.sample_list:
        for passes in args.pass_list:
            settings = {**base, "name": f"joint_n{n}_p{passes}", "samples": n, "passes": passes,
                        "tweak": asdict(TweakSpec(iters=passes))}
            row = cached_or_run(settings, point(n, passes))
            if row:
                rows.append(row)
                print(f"{row['name']}: val {row['val_ppl']:.3f}", flush=True)
    lines = ["| calibration | passes | steps per block | val ppl | tweak wall s | tweak CPU s | "
             "revision |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "samples" in r:
            steps = -(-r["samples"] // 8) * r["passes"]
            lines.append(f"| {r['samples']} x {r['seq_len']} | {r['passes']} | {steps} | "
                         f"{r['val_ppl']:.3f} | {r['tweak_wall_s']:.0f} | {r['tweak_cpu_s']:.0f} "
                         f"| {r['revision']} |")
        else:
            lines.append(f"| {r['name']} | - | - | {r['val_ppl']:.3f} | - | - | {r['revision']} |")
    table = "\n".join(lines)
    caption = (f"{args.model}, W4A16 (QuantSpec()), the joint tweak (TweakSpec(iters=passes)); "
               f"calibration: the first N of {max(args.sample_list)} {args.calibration} windows "
               f"of {args.seq_len} tokens (seed {args.seed}); perplexity on the first "
               f"{args.max_windows} x 1024-token windows of Wikipedia validation; "
               f"{args.threads} thread(s)")
    print(f"\n{caption}\n\n{table}\n\nreproduce: {command}")
    result = {"command": command, "caption": caption, "rows": rows, "table": table}
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
