"""Float vs RTN vs GPTQ perplexity (and quantization time) on SmolLM2 / Wikipedia.

    python benchmarks/quantizers.py                       # small default run
    python benchmarks/quantizers.py --calib-samples 128 --max-windows 0   # paper-sized

Each configuration quantizes a fresh copy of the float model with
normtweak.quant.quantize_model, then scores the Wikipedia test split with
normtweak.evaluate.perplexity (non-overlapping 1024-token windows, the first
--max-windows of them). GPTQ calibrates on random 512-token windows of the train
split (normtweak.calib.text.calibration_from_text). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time

import torch

from normtweak.calib.text import calibration_from_text
from normtweak.config import QuantSpec, RunSpec
from normtweak.evaluate.perplexity import perplexity
from normtweak.evaluate.report import write_json
from normtweak.evaluate.taskdata import corpus_documents
from normtweak.loading.float import load_model
from normtweak.quant.model import quantize_model


def parse_configs(text: str) -> list[tuple[int, int]]:
    """'4:-1,4:128,3:128' -> [(bits, group_size), ...]."""
    out = []
    for item in text.split(","):
        bits, group = item.split(":")
        out.append((int(bits), int(group)))
    return out


def label(bits: int, group: int) -> str:
    return f"W{bits} " + ("per-channel" if group == -1 else "per-tensor" if group == 0
                          else f"g{group}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--text", default="wikipedia")
    p.add_argument("--configs", default="4:-1,4:64,3:64", help="bits:group_size,...")
    p.add_argument("--methods", default="rtn,gptq")
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=8, help="0 = the whole test split")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--act-order", action="store_true")
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--true-sequential", action="store_true")
    p.add_argument("--no-float", action="store_true", help="skip the float baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--output", default="results/quantizers.json")
    args = p.parse_args(argv)
    command = "python benchmarks/quantizers.py " + " ".join(map(shlex.quote, sys.argv[1:]
                                                                  if argv is None else argv))
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    test_text = corpus_documents(args.text, "test")  # each document from its own BOS
    max_windows = args.max_windows or None

    def ppl(m) -> tuple[float, float]:
        t = time.perf_counter()
        with torch.no_grad():
            r = perplexity(m, tokenizer, test_text, window=args.window, max_windows=max_windows)
        return r.ppl, time.perf_counter() - t

    methods = args.methods.split(",")
    calib = None
    if "gptq" in methods:
        calib = calibration_from_text(tokenizer, args.text, args.calib_samples, args.calib_len,
                                      seed=args.seed).input_ids
    rows = []
    if not args.no_float:
        f_ppl, f_eval = ppl(model)
        rows.append({"config": "float", "method": "-", "ppl": f_ppl, "quant_s": 0.0,
                     "eval_s": f_eval})
        print(f"float: ppl {f_ppl:.2f} ({f_eval:.0f} s)", flush=True)
    for bits, group in parse_configs(args.configs):
        for method in methods:
            spec = QuantSpec(bits=bits, group_size=group, method=method, symmetric=args.symmetric,
                             act_order=args.act_order, true_sequential=args.true_sequential)
            qmodel = copy.deepcopy(model)
            t = time.perf_counter()
            quantize_model(qmodel, spec, calibration=calib, run=RunSpec(progress=False))
            quant_s = time.perf_counter() - t
            q_ppl, q_eval = ppl(qmodel)
            rows.append({"config": label(bits, group), "method": method, "ppl": q_ppl,
                         "quant_s": quant_s, "eval_s": q_eval, "spec": spec.as_dict()})
            print(f"{label(bits, group)} {method}: ppl {q_ppl:.2f} "
                  f"(quantize {quant_s:.0f} s, eval {q_eval:.0f} s)", flush=True)
            del qmodel

    print(f"\n{args.model} on {args.text} test, {args.window}-token windows, "
          f"max_windows={max_windows}; GPTQ calibration {args.calib_samples} x "
          f"{args.calib_len} tokens of {args.text} train; act_order={args.act_order}, "
          f"true_sequential={args.true_sequential}; {args.threads} torch thread(s)")
    print("| config | method | ppl | quantize s | eval s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['method']} | {r['ppl']:.2f} | {r['quant_s']:.1f} | "
              f"{r['eval_s']:.1f} |")
    print(f"\nreproduce: {command}")
    result = {"args": vars(args), "command": command,
              "torch_threads": torch.get_num_threads(), "rows": rows}
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
