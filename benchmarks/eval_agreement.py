"""Our pinned perplexity vs lm-eval's rolling task on the same documents (SmolLM2).

Both score the first --docs documents of the corpus split, each from its own BOS, with
--window-token windows (lm-eval: max_length = window). Prints a table, writes JSON.

    python benchmarks/eval_agreement.py --model smollm2-135m --text wikipedia --docs 1
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from normtweak.evaluate import perplexity
from normtweak.evaluate.commands import load_for_eval
from normtweak.evaluate.harness import (
    HarnessSpec,
    results_rows,
    rolling_loglikelihoods,
    run_tasks,
)
from normtweak.evaluate.report import markdown_table, write_json
from normtweak.evaluate.taskdata import CORPUS_TASKS, corpus_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--text", default="wikipedia", choices=sorted(CORPUS_TASKS.values()))
    ap.add_argument("--split", default="test")
    ap.add_argument("--docs", type=int, default=1, help="first N documents of the split")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--output", default="results/eval_agreement.json")
    args = ap.parse_args()
    command = "python benchmarks/eval_agreement.py " + " ".join(sys.argv[1:])

    docs = corpus_documents(args.text, args.split)[: args.docs]
    model, tok = load_for_eval(args.model)
    t0 = time.perf_counter()
    ours = perplexity(model, tok, docs, window=args.window)
    t_ours = time.perf_counter() - t0
    task = next(t for t, name in CORPUS_TASKS.items() if name == args.text)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        res = run_tasks(model, tok, [task], cache_dir=cache,
                        spec=HarnessSpec(max_length=args.window, log_samples=True),
                        documents=lambda name: docs)
    t_lm = time.perf_counter() - t0
    lm_nll = -sum(rolling_loglikelihoods(res, task))
    metrics = {r["metric"]: r["value"] for r in results_rows(res)}
    rows = [
        {"method": "normtweak.perplexity", "nll_sum": ours.nll_sum, "ppl": ours.ppl,
         "word_ppl": ours.word_ppl, "bits_per_byte": ours.bits_per_byte, "seconds": t_ours},
        {"method": f"lm-eval {task} (rolling)", "nll_sum": lm_nll,
         "ppl": math.exp(lm_nll / ours.tokens), "word_ppl": metrics["word_perplexity"],
         "bits_per_byte": metrics["bits_per_byte"], "seconds": t_lm},
    ]
    rel = abs(lm_nll - ours.nll_sum) / ours.nll_sum
    table = markdown_table(rows, ["method", "nll_sum", "ppl", "word_ppl", "bits_per_byte", "seconds"])
    caption = (f"{args.model} on {args.text}/{args.split}, first {len(docs)} document(s): "
               f"{ours.tokens} tokens, {ours.words} words, {ours.bytes} bytes; "
               f"{ours.describe()}, BOS per document, {ours.windows} windows")
    print(caption + "\n\n" + table + f"\n\nrelative NLL difference: {rel:.2e}")
    print(f"(timings on a shared 2-core CPU, under contention)\nreproduce: {command}")
    write_json(args.output, {"command": command, "model": args.model, "text": args.text,
                             "split": args.split, "docs": len(docs), "tokens": ours.tokens,
                             "words": ours.words, "bytes": ours.bytes, "mode": ours.describe(),
                             "windows": ours.windows, "rows": rows, "relative_nll_diff": rel})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
