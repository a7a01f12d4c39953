"""One block of SmolLM2, float-stream inputs: train and held-out output MSE of RTN W4 g64
vs tuned clipping/rounding at several signed-step sizes (how quant_lr's default was chosen).

    python benchmarks/block_diagnosis.py BLOCK NUM_SAMPLES      # e.g. 20 16
    python benchmarks/block_diagnosis.py 0 16 gptq               # start from GPTQ's codes
Output: results/accuracy_smoke/block_diagnosis.txt (blocks 5 and 20, 16 samples, RTN) and
block_diagnosis_gptq_block0.txt (block 0 from GPTQ: where keep_better came from).
"""
import copy
import sys
import time

import torch

from normtweak import arch
from normtweak.calib.text import calibration_from_text
from normtweak.config import QuantSpec, TweakSpec
from normtweak.loading.float import load_model
from normtweak.quant import quantize_block
from normtweak.quant.tunable import make_tunable, to_quant_linear
from normtweak.tweak.loss import get_loss
from normtweak.tweak.train import train_norms
from normtweak.walk import BlockState

torch.set_num_threads(1); torch.manual_seed(0)
model, tok = load_model("smollm2-135m")
k = int(sys.argv[1]); n = int(sys.argv[2]); method = sys.argv[3] if len(sys.argv) > 3 else "rtn"
train = calibration_from_text(tok, "wikipedia", n, 512, seed=0).input_ids
held = calibration_from_text(tok, "wikipedia", 8, 512, seed=1).input_ids
ids = torch.cat([train, held])
inputs = arch.capture_block_inputs(model, list(ids.split(8)), device="cpu")
blocks = arch.get_adapter(model).get_blocks(model)
with torch.no_grad():
    hidden = list(inputs.hidden)
    for i in range(k):
        hidden = [arch.run_block(blocks[i], h, inputs.extra(i, h.shape)) for h in hidden]
    fb = blocks[k]
    targets = [arch.run_block(fb, h, inputs.extra(k, h.shape)) for h in hidden]
ntr = n // 8
htr, ttr, hte, tte = hidden[:ntr], targets[:ntr], hidden[ntr:], targets[ntr:]
mse = get_loss("mse")
def ev(b, hs, ts):
    with torch.no_grad():
        return sum(float(mse(t, arch.run_block(b, h, inputs.extra(k, h.shape)))) for h, t in zip(hs, ts)) / len(hs)
spec = QuantSpec(bits=4, group_size=64, symmetric=False, method=method)
hessian_pass = lambda b: (lambda: [arch.run_block(b, h, inputs.extra(k, h.shape)) for h in htr])
GPTQ_ROWS = [("gptq", 0, "none", None, 0), ("norms 1e-4", 1e-4, "none", None, 3),
             ("clip_round 2e-2", 0.0, "clip_round", 2e-2, 3), ("clip 2e-2", 0.0, "clip", 2e-2, 3),
             ("norms+clip_round 2e-2", 1e-4, "clip_round", 2e-2, 3),
             ("clip_round 5e-3", 0.0, "clip_round", 5e-3, 3)]
for name, lr, qp, qlr, iters in GPTQ_ROWS if method == "gptq" else [("rtn", 0, "none", None, 0), ("clip_round 5e-3", 0.0, "clip_round", 5e-3, 3), ("clip_round 1e-2", 0.0, "clip_round", 1e-2, 3), ("clip_round 2e-2", 0.0, "clip_round", 2e-2, 3), ("clip_round 5e-2", 0.0, "clip_round", 5e-2, 3), ("norms+clip_round 2e-2", 1e-4, "clip_round", 2e-2, 3),
        ("clip_round auto", 0.0, "clip_round", None, 3), ("clip_round 5e-3", 0.0, "clip_round", 5e-3, 3),
        ]:
    b = copy.deepcopy(fb)
    floats = {nm: l.weight.detach().clone() for nm, l in arch.block_linears(b)}
    q = quantize_block(b, spec, hessian_pass(b))
    t0 = time.time()
    if iters:
        tw = TweakSpec(lr=lr, iters=iters, batch_size=8, loss="mse", quant_params=qp, quant_lr=qlr,
                       target="quantized_input", keep_better=False)
        tun = {nm: make_tunable(m, floats[nm], qp == "clip_round") for nm, m in q.items()} if qp != "none" else {}
        for nm, t in tun.items(): b.set_submodule(nm, t)
        state = BlockState(k, 30, b, inputs, htr, torch.device("cpu"), list, targets=ttr,
                           loss_fn=mse, lr=lr)
        train_norms(state, tw, torch.Generator().manual_seed(0), list(tun.values()))
        for nm, t in tun.items(): b.set_submodule(nm, to_quant_linear(t, q[nm]))
    print(f"block {k} n={n} {method} {name:24s} train {ev(b, htr, ttr):.5f} held-out {ev(b, hte, tte):.5f} ({time.time()-t0:.0f}s)", flush=True)
