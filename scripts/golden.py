"""Golden outputs: what quantizing and tweaking produce today, pinned so a redesign can't move them.

    python scripts/golden.py record            # tiny models -> tests/golden/tiny.json
    python scripts/golden.py record --smollm2  # + two SmolLM2 blocks -> tests/golden/smollm2.json
    python scripts/golden.py check [--smollm2] # recompute and compare (exit 1 on a difference)

Every case spells out every QuantSpec / TweakSpec field it relies on, so changing a default
never changes a golden case. A case's record is the sha256 of every tensor of the resulting
model's state dict (bytes, dtype and shape), plus the perplexity of the result on a fixed text
in repr form (exact). The environment (torch version, CPU capability, CPU model) is recorded too:
bit-identity is only promised on the same one (tests/test_golden.py says what it checks
elsewhere).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from runinfo import cpuinfo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

# Every field each case relies on, spelled out (defaults may change; these may not).
RTN_W4 = dict(bits=4, group_size=16, symmetric=False, method="rtn")
RTN_W3 = dict(bits=3, group_size=16, symmetric=False, method="rtn")
GPTQ_W4 = dict(bits=4, group_size=16, symmetric=False, method="gptq", damp=0.01, act_order=True,
               block_size=128, static_groups=True, group_params="updated")
PAPER = dict(lr=1e-3, scale=5.0, iters=1, batch_size=1, loss="dist", target="quantized_input",
             quant_params="none", quant_lr=None, end_to_end_iters=0, keep_better=False,
             best_step=False)
JOINT = dict(lr=1e-4, scale=5.0, iters=3, batch_size=2, loss="rel_mse", target="float_input",
             quant_params="clip_round", quant_lr=None, end_to_end_iters=0, keep_better=True,
             best_step=False)
FAMILIES = ("llama", "opt", "bloom", "gemma", "gpt2", "bert")


ENVIRONMENT_KEYS = ("torch", "cpu_capability", "cpu")


def environment() -> dict:
    """What bit-identity depends on: torch's version, its CPU capability and the CPU itself
    (two CPUs of one capability, an AMD EPYC and an Intel Xeon, round a LayerNorm differently)."""
    return {"torch": torch.__version__.split("+")[0],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpuinfo()[0]}


def same_environment(recorded: dict, fresh: dict) -> bool:
    return all(recorded.get(k) == fresh.get(k) for k in ENVIRONMENT_KEYS)


def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    raw = t.view(torch.uint8) if t.dtype.itemsize == 1 else t
    data = raw.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    head = f"{t.dtype}|{tuple(t.shape)}|".encode()
    return hashlib.sha256(head + data).hexdigest()[:16]


def model_record(model, tokenizer, text: str | None) -> dict:
    from normtweak.evaluate.perplexity import perplexity

    record = {"tensors": {k: tensor_digest(v) for k, v in sorted(model.state_dict().items())}}
    if text is not None:
        record["ppl"] = repr(perplexity(model, tokenizer, text, window=32).ppl)
    return record


def _calibration(n: int = 4, seq: int = 32) -> torch.Tensor:
    from normtweak.testing import tiny_batch

    return torch.cat([tiny_batch(1, seq, seed=s) for s in range(n)])


def tiny_cases():
    """(name, family, run(model, tokenizer) -> extra dict or None) for every tiny case."""
    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.evaluate.deltas import layer_stats
    from normtweak.quant.model import quantize_model
    from normtweak.tweak.pipeline import tweak_model

    ids = _calibration()
    QUIET = RunSpec(progress=False)

    def quantize(spec):
        def run(model, tok):
            quantize_model(model, QuantSpec(**spec), calibration=ids, run=QUIET, batch_size=2)
        return run

    def tweak(quant, spec, imported=None, **run_fields):
        def run(model, tok):
            result = tweak_model(model, ids, QuantSpec(**quant), TweakSpec(**spec),
                                 RunSpec(seed=3, progress=False, **run_fields),
                                 imported=imported)
            return {"losses": [[repr(b.loss_before), repr(b.loss_after), b.kept_start]
                               for b in result.blocks]}
        return run

    def stats(model, tok):
        quantize_model(model, QuantSpec(**RTN_W4), run=QUIET)
        return {"layer_stats": [[repr(m), repr(v)] for m, v in layer_stats(model, ids)]}

    def imported(model, tok):
        from normtweak.io import save_quantized
        from normtweak.loading.foreign import load_quantized_linears

        other = _fresh("llama")
        quantize_model(other, QuantSpec(**RTN_W4), run=QUIET)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_quantized(other, tok, Path(tmp) / "q", quant=QuantSpec(**RTN_W4))
            linears = load_quantized_linears(Path(tmp) / "q")
        return tweak(RTN_W4, JOINT, imported=linears)(model, tok)

    def resumed(model, tok):
        with tempfile.TemporaryDirectory() as tmp:
            first = _fresh("llama")

            def stop_before_block_1(index, block):  # block 0 is checkpointed by then
                if index == 1:
                    raise KeyboardInterrupt

            try:
                tweak_model(first, ids, QuantSpec(**RTN_W4), TweakSpec(**JOINT),
                            RunSpec(seed=3, progress=False, checkpoint_dir=tmp),
                            block_loader=stop_before_block_1)
            except KeyboardInterrupt:
                pass
            tweak_model(model, ids, QuantSpec(**RTN_W4), TweakSpec(**JOINT),
                        RunSpec(seed=3, progress=False, checkpoint_dir=tmp, resume=True))

    cases = []
    for fam in FAMILIES:
        cases += [(f"{fam}/rtn", fam, quantize(RTN_W4)),
                  (f"{fam}/paper", fam, tweak(RTN_W3, PAPER)),
                  (f"{fam}/joint", fam, tweak(RTN_W4, JOINT))]
        if fam != "bert":
            cases.append((f"{fam}/gptq", fam, quantize(GPTQ_W4)))
    cases += [
        ("llama/gptq-true-sequential", "llama", lambda m, t: quantize_model(
            m, QuantSpec(**GPTQ_W4, true_sequential=True), calibration=ids, run=QUIET,
            batch_size=2)),
        ("llama/gptq+joint", "llama", tweak(GPTQ_W4, JOINT)),
        ("llama/gptq+paper-true-sequential", "llama", tweak({**GPTQ_W4, "true_sequential": True},
                                                            PAPER)),
        ("llama/joint-fp16-scales", "llama", tweak(RTN_W4, JOINT, scale_dtype="float16")),
        ("llama/joint-mse-sym", "llama", tweak({**RTN_W4, "symmetric": True, "full_range": False},
                                               {**JOINT, "loss": "mse"})),
        ("llama/paper-float-target-kb", "llama", tweak(RTN_W3, {**PAPER, "target": "float_input",
                                                                "keep_better": True})),
        ("llama/end-to-end", "llama", tweak(RTN_W3, {**PAPER, "end_to_end_iters": 1})),
        ("llama/imported+joint", "llama", imported),
        ("llama/resumed-joint", "llama", resumed),
        ("llama/layer-stats", "llama", stats),
    ]
    return cases


def _fresh(family: str):
    from normtweak.arch import prepare_model
    from normtweak.testing import tiny_model

    return prepare_model(tiny_model(family, seed=0))


def record_tiny() -> dict:
    from normtweak.testing import _SAMPLE_TEXT, tiny_tokenizer

    tok = tiny_tokenizer()
    out = {}
    for name, family, run in tiny_cases():
        model = _fresh(family)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = run(model, tok)
        extra = extra if isinstance(extra, dict) else {}
        text = _SAMPLE_TEXT if family not in ("bert", "distilbert") else None
        out[name] = {**model_record(model, tok, text), **extra}
    return out


def smollm2_cases():
    from normtweak.config import QuantSpec

    return [("smollm2/rtn", QuantSpec(**{**RTN_W4, "group_size": 64}), None),
            ("smollm2/gptq", QuantSpec(**{**GPTQ_W4, "group_size": 64}), None),
            ("smollm2/paper", QuantSpec(**{**RTN_W4, "group_size": 64}),
             {**PAPER, "lr": 1e-4}),
            ("smollm2/joint", QuantSpec(**{**RTN_W4, "group_size": 64}),
             {**JOINT, "batch_size": 4})]


def record_smollm2() -> dict:
    """Two SmolLM2 blocks (the model cut after block 1) on 8 x 128 Wikipedia train windows."""
    from normtweak.assets import load_text
    from normtweak.calib.text import calibration_from_text
    from normtweak.config import RunSpec, TweakSpec
    from normtweak.evaluate.perplexity import perplexity
    from normtweak.loading.float import load_model
    from normtweak.quant.model import quantize_model
    from normtweak.tweak.pipeline import tweak_model

    base, tok = load_model("smollm2-135m")
    base.model.layers = base.model.layers[:2]
    base.config.num_hidden_layers = 2
    ids = calibration_from_text(tok, "wikipedia", 8, 128, seed=0).input_ids
    text = load_text("wikipedia", "validation")[:6000]
    out = {}
    import copy

    for name, quant, tweak in smollm2_cases():
        model = copy.deepcopy(base)
        extra = {}
        if tweak is None:
            quantize_model(model, quant, calibration=ids, run=RunSpec(progress=False),
                           batch_size=4)
        else:
            res = tweak_model(model, ids, quant, TweakSpec(**tweak), RunSpec(progress=False))
            extra["losses"] = [[repr(b.loss_before), repr(b.loss_after), b.kept_start]
                               for b in res.blocks]
        blocks = {k: tensor_digest(v) for k, v in sorted(model.state_dict().items())
                  if k.startswith("model.layers.")}
        out[name] = {"tensors": blocks, **extra,
                     "ppl": repr(perplexity(model, tok, text, window=256, max_windows=2).ppl)}
    return out


def close(a, b, rel: float = 1e-3) -> bool:
    """Whether two records agree to a relative `rel`: numbers (or their reprs) within it,
    booleans equal, lists element by element."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    return math.isclose(float(a), float(b), rel_tol=rel)


def compare(golden: dict, fresh: dict, exact: bool = True) -> list[str]:
    """Every difference between two records, as lines (empty: identical).

    exact=False (another torch version or CPU, where float rounding may differ): tensors are
    not compared; perplexities and the blocks' losses must agree to a relative 1e-3."""
    problems = []
    for case in sorted(set(golden) | set(fresh)):
        g, f = golden.get(case), fresh.get(case)
        if g is None or f is None:
            problems.append(f"{case}: {'new' if g is None else 'missing'} case")
            continue
        for key in sorted(set(g) | set(f)):
            if not exact:
                if key in ("ppl", "losses") and not close(g.get(key), f.get(key)):
                    problems.append(f"{case}: {key} {g.get(key)} vs {f.get(key)} (beyond 1e-3)")
                continue
            if key == "tensors":
                names = sorted(set(g[key]) | set(f[key]))
                diff = [n for n in names if g[key].get(n) != f[key].get(n)]
                if diff:
                    problems.append(f"{case}: {len(diff)} tensors differ, e.g. {diff[:3]}")
            elif g.get(key) != f.get(key):
                problems.append(f"{case}: {key} {g.get(key)} != {f.get(key)}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["record", "check"])
    p.add_argument("--smollm2", action="store_true", help="also the two SmolLM2 blocks (slow)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # reductions summed in one fixed order
    jobs = [("tiny", record_tiny)] + ([("smollm2", record_smollm2)] if args.smollm2 else [])
    failed = False
    for name, fn in jobs:
        path = GOLDEN / f"{name}.json"
        fresh = {"environment": environment(), "cases": fn()}
        if args.action == "record":
            GOLDEN.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
            print(f"wrote {path} ({len(fresh['cases'])} cases)")
            continue
        golden = json.loads(path.read_text())
        exact = same_environment(golden["environment"], fresh["environment"])
        if not exact:
            print(f"note: recorded on {golden['environment']}, checked on "
                  f"{fresh['environment']}: perplexities and losses compared to 1e-3, tensors not compared")
        problems = compare(golden["cases"], fresh["cases"], exact)
        for line in problems:
            print(line)
        print(f"{name}: {'DIFFERENT' if problems else 'identical'} "
              f"({len(fresh['cases'])} cases)")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
