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

from normtweak.config import QuantSpec
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
    ap.add_argument("--output", default="results/layer_deltas_smollm2_w4.json")
    args = ap.parse_args()
    command = "python benchmarks/layer_deltas.py " + " ".join(sys.argv[1:])

    model, tok = load_for_eval(args.model)
    ids = sample_ids(tok, args.text, args.samples, args.seq, args.seed)
    spec = QuantSpec(bits=args.bits, group_size=args.group_size)
    label = f"rtn W{args.bits} " + ("per-channel" if args.group_size == -1 else f"g{args.group_size}")
    quant = quantize_model(copy.deepcopy(model), spec, progress=False)
    deltas = layer_deltas(layer_stats(model, ids), layer_stats(quant, ids))
    png = plot_deltas({label: deltas}, args.output.replace(".json", ".png"),
                      title=f"{args.model}: {label} vs float, block outputs "
                            f"({args.samples}x{args.seq} {args.text} train tokens)")
    print(markdown_table(deltas, ["layer", "mean_ref", "d_mean", "var_ref", "d_var"]))
    payload = {"command": command, "spec": dataclasses.asdict(spec), "deltas": deltas,
               "plot": str(png)}
    if args.docs:
        docs = corpus_documents(args.text, "test")[: args.docs]
        ppl = {name: dataclasses.asdict(perplexity(m, tok, docs))
               for name, m in (("float", model), ("quant", quant))}
        rows = compare_rows(ppl)
        mode = f"{rows[0]['mode']} window={rows[0]['window']}"
        print(f"\nPerplexity, {args.text}/test first {args.docs} doc(s), {mode}, BOS per "
              f"document ({rows[0]['tokens']} tokens); quant = {label}\n")
        print(markdown_table(rows, ["model", "ppl", "word_ppl", "bits_per_byte", "tokens"]))
        payload["perplexity"] = rows
    write_json(args.output, payload)
    print(f"\nwrote {args.output} and {png}\nreproduce: {command}")


if __name__ == "__main__":
    main()
