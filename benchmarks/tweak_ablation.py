"""Which tweak settings recover the most? An ablation on the *validation* split only.

One quantization config, one calibration set, several TweakSpec variants; each is run
from the same shared start (block 0's inputs and targets) and scored on Wikipedia
validation windows. The test split is never read here, so choosing defaults from this
table does not tune on test.

    python benchmarks/tweak_ablation.py --threads 1 \
        --variants "lr=1e-4" "lr=1e-4,iters=3" "lr=1e-4,loss=mse" "lr=1e-3,scale=0"

Each variant is `key=value` pairs of TweakSpec fields. Writes results/tweak_ablation*.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch


def parse_variant(text: str) -> dict:
    """'lr=1e-4,iters=3,loss=mse' -> {'lr': 1e-4, 'iters': 3, 'loss': 'mse'} typed by TweakSpec."""
    from normtweak.config import TweakSpec

    types = {f.name: f.type for f in fields(TweakSpec)}
    out = {}
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key not in types:
            raise ValueError(f"unknown TweakSpec field {key!r}; known: {sorted(types)}")
        kind = str(types[key])
        out[key] = float(value) if "float" in kind else int(value) if "int" in kind else value
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--quant", default="rtn:4:-1", help="method:bits:group_size")
    ap.add_argument("--calibration", choices=["selfgen", "text"], default="selfgen")
    ap.add_argument("--num-samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/tweak_ablation.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.evaluate import perplexity
    from normtweak.evaluate.report import gap_recovered, markdown_table
    from normtweak.evaluate.taskdata import corpus_documents
    from normtweak.loading.float import load_model
    from normtweak.tweak.pipeline import prepare_start, tweak_model
    from normtweak.tweak.run import CalibrationKey, calibration_ids

    method, bits, group = args.quant.split(":")
    quant = QuantSpec(method=method, bits=int(bits), group_size=int(group), symmetric=False)
    model, tok = load_model(args.model)
    calib = calibration_ids(model, tok, CalibrationKey(args.model, args.calibration,
                                                       args.num_samples, args.seq_len, 0))
    val = corpus_documents("wikipedia", "validation")

    def score(m) -> float:
        return perplexity(m, tok, val, max_windows=args.eval_windows).ppl

    float_ppl = score(model)
    QUIET = RunSpec(progress=False)
    start = prepare_start(model, calib.input_ids, 1, QUIET)
    plain = copy.deepcopy(model)
    tweak_model(plain, calib.input_ids, quant, TweakSpec.preset("paper", loss="none"), QUIET,
                start=start)
    quant_ppl = score(plain)
    del plain
    print(f"float {float_ppl:.3f}  quantized {quant_ppl:.3f}", flush=True)
    rows = []
    for text in args.variants:
        spec = TweakSpec.preset("paper", **{"keep_better": True, **parse_variant(text)})
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        run = tweak_model(m, calib.input_ids, quant, spec, QUIET, start=start)
        seconds = time.perf_counter() - t0
        ppl = score(m)
        losses = [(b.loss_before, b.loss_after) for b in run.blocks]
        rows.append({"variant": text, "val_ppl": ppl,
                     "gap_recovered_%": gap_recovered(float_ppl, quant_ppl, ppl),
                     "tweak_s": seconds, "loss_drop_%": 100 * (1 - sum(a for _, a in losses)
                                                              / max(sum(b for b, _ in losses), 1e-30)),
                     "spec": asdict(spec)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "spec"}), flush=True)
        del m
    report = {"command": "python benchmarks/tweak_ablation.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "quant": asdict(quant),
              "calibration": f"{args.calibration} {args.num_samples}x{args.seq_len}",
              "eval": f"wikipedia validation, {args.eval_windows} x 1024-token windows",
              "float_ppl": float_ppl, "quant_ppl": quant_ppl, "threads": torch.get_num_threads(),
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown_table(rows, ["variant", "val_ppl", "gap_recovered_%", "loss_drop_%", "tweak_s"]))
    return report


if __name__ == "__main__":
    main()
