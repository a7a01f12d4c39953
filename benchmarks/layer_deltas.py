"""Fast eval: per-block output drift of RTN-quantized SmolLM2 vs float, and perplexity.

Runs `layer_stats` on --samples x --seq tokens of the corpus' train split for the float
model and for RTN W--bits (per-channel by default) from normtweak.quant.quantize_model,
plots delta-mean / delta-var per block (PNG) and scores both on the first --docs test
documents. Prints tables, writes JSON.

    python benchmarks/layer_deltas.py --model smollm2-135m --bits 4 --group-size -1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys

import torch

from normtweak.config import QuantSpec, RunSpec
from normtweak.evaluate import perplexity
from normtweak.evaluate.commands import load_for_eval
from normtweak.evaluate.deltas import layer_deltas, layer_stats, plot_deltas
from normtweak.evaluate.report import compare_rows, markdown_table, write_json
from normtweak.evaluate.taskdata import corpus_documents
from normtweak.quant import quantize_model


def sample_ids(tok, text: str, samples: int, seq: int, seed: int) -> torch.Tensor:
    """[samples, seq] token ids cut at seeded offsets from the train split."""
    ids = tok("\n\n".join(corpus_documents(text, "train")), add_special_tokens=False)["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seq, (samples,), generator=gen).tolist()
    return torch.tensor([ids[s : s + seq] for s in starts])


def tweaked_model(model, tok, args, spec):
    """A norm-tweaked copy of `model` (the pipeline's RTN + tweak) on self-generated calibration."""
    from normtweak.config import TweakSpec
    from normtweak.tweak.pipeline import tweak_model
    from normtweak.tweak.run import CalibrationKey, calibration_ids

    n, t = (int(v) for v in args.calib.split("x"))
    calib = calibration_ids(model, tok, CalibrationKey(args.model, "selfgen", n, t, 0))
    tweaked = copy.deepcopy(model)
    tweak_model(tweaked, calib.input_ids, spec,
                TweakSpec.preset("paper", lr=args.tweak_lr, scale=args.tweak_scale,
                                 keep_better=True), RunSpec(progress=False))
    return tweaked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--text", default="wikipedia")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=-1)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--docs", type=int, default=1, help="test documents for perplexity (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tweak-lr", type=float, default=None,
                    help="also norm-tweak (RTN + tweak, self-generated calibration) at this lr")
    ap.add_argument("--tweak-scale", type=float, default=5.0)
    ap.add_argument("--calib", default="128x128", help="self-generated calibration NxT for --tweak-lr")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", default="results/layer_deltas_smollm2_w4.json")
    args = ap.parse_args()
    command = "python benchmarks/layer_deltas.py " + " ".join(sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = load_for_eval(args.model)
    ids = sample_ids(tok, args.text, args.samples, args.seq, args.seed)
    spec = QuantSpec(bits=args.bits, group_size=args.group_size, symmetric=False)
    label = f"rtn W{args.bits} " + ("per-channel" if args.group_size == -1 else f"g{args.group_size}")
    quant = quantize_model(copy.deepcopy(model), spec, run=RunSpec(progress=False))
    ref = layer_stats(model, ids)
    deltas = layer_deltas(ref, layer_stats(quant, ids))
    curves, models = {label: deltas}, [("float", model), ("quant", quant)]
    if args.tweak_lr is not None:
        tweaked = tweaked_model(model, tok, args, spec)
        tweak_label = f"{label} + tweak (lr {args.tweak_lr:g}, scale {args.tweak_scale:g})"
        curves[tweak_label] = layer_deltas(ref, layer_stats(tweaked, ids))
        models.append(("tweaked", tweaked))
        for row, t in zip(deltas, curves[tweak_label]):
            row["d_mean_tweaked"], row["d_var_tweaked"] = t["d_mean"], t["d_var"]
    png = plot_deltas(curves, args.output.replace(".json", ".png"),
                      title=f"{args.model}: {label} vs float, block outputs "
                            f"({args.samples}x{args.seq} {args.text} train tokens)")
    columns = ["layer", "mean_ref", "d_mean", "var_ref", "d_var"]
    if args.tweak_lr is not None:
        columns += ["d_mean_tweaked", "d_var_tweaked"]
    print(markdown_table(deltas, columns))
    payload = {"command": command, "spec": dataclasses.asdict(spec), "deltas": deltas,
               "curves": curves, "plot": str(png)}
    if args.docs:
        docs = corpus_documents(args.text, "test")[: args.docs]
        ppl = {name: dataclasses.asdict(perplexity(m, tok, docs))
               for name, m in models}
        rows = compare_rows(ppl)
        mode = f"{rows[0]['mode']} window={rows[0]['window']}"
        print(f"\nPerplexity, {args.text}/test first {args.docs} doc(s), {mode}, BOS per "
              f"document ({rows[0]['tokens']} tokens); quant = {label}\n")
        print(markdown_table(rows, ["model", "ppl", "word_ppl", "bits_per_byte", "tokens", "gap_recovered_%"]))
        payload["perplexity"] = rows
    write_json(args.output, payload)
    print(f"\nwrote {args.output} and {png}\nreproduce: {command}")


if __name__ == "__main__":
    main()
