"""Where a block's output MSE comes from: the share of the first token of each window.

    OMP_NUM_THREADS=1 python benchmarks/token_error_share.py [--bits 4 --group-size 64 --samples 4]

SmolLM2 in float and RTN-quantized (normtweak.quant.model.quantize_model), the same
calibration windows (Wikipedia train, 512 tokens, seed 0) through both; for each block's
output (hidden state after block l): the MSE over all tokens, the share of it that the
first token of the windows carries, and the mean relative error
sum_c (h_f - h_q)^2 / sum_c h_f^2 of the first token and of the others. Why the `rel_mse`
tweak loss exists: where the first token's activations are massive, plain MSE training
fits that one token. Prints a Markdown table and writes --output (JSON).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this repository's normtweak, not another checkout
    sys.path.insert(0, str(ROOT))

from normtweak.calib.text import calibration_from_text  # noqa: E402
from normtweak.config import QuantSpec, RunSpec  # noqa: E402
from normtweak.evaluate.report import write_json  # noqa: E402
from normtweak.loading.float import load_model  # noqa: E402
from normtweak.quant.model import quantize_model  # noqa: E402


def share_rows(h_float: list[torch.Tensor], h_quant: list[torch.Tensor]) -> list[dict]:
    """One row per hidden state pair [batch, tokens, channels] (index = block)."""
    rows = []
    for index, (f, q) in enumerate(zip(h_float, h_quant)):
        err = (f.double() - q.double()).pow(2).sum(-1)  # [batch, tokens]
        rel = err / f.double().pow(2).sum(-1)
        rows.append({"block": index, "mse": float(err.mean() / f.shape[-1]),
                     "first_token_share": float(err[:, 0].sum() / err.sum()),
                     "rel_err_first": float(rel[:, 0].mean()),
                     "rel_err_rest": float(rel[:, 1:].mean())})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--output", default="results/token_error_share.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, tokenizer = load_model(args.model)
    ids = calibration_from_text(tokenizer, "wikipedia", args.samples, args.seq_len, seed=0).input_ids
    qmodel = copy.deepcopy(model)
    quantize_model(qmodel, QuantSpec(bits=args.bits, group_size=args.group_size, symmetric=False,
                                      method="rtn"), run=RunSpec(progress=False))
    with torch.no_grad():
        # hidden_states[0] is the embedding output; [l + 1] the output of block l (the
        # last one is after the final norm, so it is left out)
        hf = model(ids, output_hidden_states=True).hidden_states[1:-1]
        hq = qmodel(ids, output_hidden_states=True).hidden_states[1:-1]
    rows = share_rows(list(hf), list(hq))
    print(f"{args.model}, RTN W{args.bits} g{args.group_size}, {args.samples} x {args.seq_len} "
          "Wikipedia train tokens (seed 0)\n")
    print("| block | output MSE | first token's share | rel. err first | rel. err rest |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['block']} | {r['mse']:.4g} | {r['first_token_share']:.3f} | "
              f"{r['rel_err_first']:.4f} | {r['rel_err_rest']:.4f} |")
    result = {"args": vars(args), "rows": rows}
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
