"""The README's main job: calibration data -> quantize -> tweak -> evaluate -> table.

Float, plain-quantized and tweaked models are scored with the same pinned
perplexity (non-overlapping 1024-token windows of the test split, each from BOS).
The plain-quantized and tweaked runs share block 0's captured inputs and targets.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, replace
from pathlib import Path

from normtweak.config import QuantSpec, TweakSpec


def spec_slug(quant: QuantSpec) -> str:
    """A short name for a quantization spec: rtn-w4-g128, gptq-w3-pc, rtn-w4-pt-sym."""
    group = {-1: "pc", 0: "pt"}.get(quant.group_size, f"g{quant.group_size}")
    return f"{quant.method}-w{quant.bits}-{group}" + ("-sym" if quant.symmetric else "")


def calibration_ids(model, tokenizer, model_ref: str, method: str, num_samples: int, seq_len: int,
                    data_dir: str, seed: int, echo=print):
    """Reuse data/<model>_<method>_<N>x<T>_*.safetensors when one exists (same tokenizer), else make it."""
    from normtweak.calib import calibration_from_text, generate_calibration, load_calibration
    from normtweak.calib.commands import output_name

    name = output_name(model_ref, method, num_samples, seq_len)
    pattern = name.rsplit("_", 1)[0] + "_*.safetensors"
    for existing in sorted(Path(data_dir).glob(pattern)):
        calib = load_calibration(existing, tokenizer)
        if calib.metadata.get("seed") in (seed, str(seed)):
            echo(f"calibration: reusing {existing}")
            return calib
    t0 = time.perf_counter()
    if method == "selfgen":
        calib = generate_calibration(model, tokenizer, num_samples=num_samples, seq_len=seq_len,
                                     seed=seed, model_name=model_ref)
    else:
        calib = calibration_from_text(tokenizer, "wikipedia", num_samples, seq_len, seed)
    path = calib.save(Path(data_dir) / name)
    echo(f"calibration: {method} {num_samples}x{seq_len} in {time.perf_counter() - t0:.0f} s -> {path}")
    return calib


def main_job(model_ref: str, quant: QuantSpec, tweak: TweakSpec, *, calibration: str = "selfgen",
             num_samples: int = 128, seq_len: int = 128, data_dir: str = "data",
             text: str = "wikipedia", eval_windows: int | None = 16, save_dir: str | None = None,
             device: str = "cpu", seed: int = 0, echo=print) -> dict:
    """Run the whole pipeline once and return a report (also echoed as a table)."""
    from normtweak.assets import load_model, load_text
    from normtweak.dist import on_main
    from normtweak.evaluate import perplexity
    from normtweak.evaluate.report import compare_rows, markdown_table
    from normtweak.io import save_quantized
    from normtweak.tweak.checkpoint import calibration_hash
    from normtweak.tweak.pipeline import prepare_start, tweak_model

    t_start = time.perf_counter()
    model, tok = load_model(model_ref)
    model.to(device)
    calib = on_main(calibration_ids, model, tok, model_ref, calibration, num_samples, seq_len,
                    data_dir, seed, echo)
    ids = calib.input_ids
    test_text = load_text(text, "test")

    def score(m, label):
        t0 = time.perf_counter()
        r = on_main(perplexity, m, tok, test_text, max_windows=eval_windows, device=device)
        echo(f"{label}: perplexity {r.ppl:.3f} ({r.windows} windows, {time.perf_counter() - t0:.0f} s)")
        return asdict(r)

    results = {"float": score(model, "float")}
    start = prepare_start(model, ids, tweak.batch_size, device)
    plain = copy.deepcopy(model)
    tweak_model(plain, ids, quant, replace(tweak, loss="none"), device=device, start=start, seed=seed)
    results["quant"] = score(plain, f"quantized ({spec_slug(quant)})")
    del plain
    run = tweak_model(model, ids, quant, tweak, device=device, start=start, seed=seed)
    results["tweaked"] = score(model, "tweaked")
    save_dir = save_dir or f"models/{Path(model_ref).name}-{spec_slug(quant)}-tweaked"
    saved = on_main(save_quantized, model, tok, save_dir, quant=quant, tweak=tweak,
                           calibration_sha256=calibration_hash(ids),
                           extra={"tweak_result": run.as_dict()})
    rows = compare_rows(results, "float", "quant")
    table = markdown_table(rows, [("model", "model"), ("ppl", "perplexity"), ("bits_per_byte", "bits/byte"),
                                  ("word_ppl", "word ppl"), ("gap_recovered_%", "gap recovered %")])
    echo(f"\n{model_ref}, {spec_slug(quant)}, tweak lr={tweak.lr:g} scale={tweak.scale:g} "
         f"loss={tweak.loss}; {calibration} calibration {len(ids)}x{ids.shape[1]}; "
         f"{text} test split, {results['float']['windows']} x {results['float']['window']}-token windows")
    echo(table)
    return {
        "model": model_ref, "quant": quant.as_dict(), "tweak": tweak.as_dict(),
        "calibration": {"method": calibration, "num_samples": len(ids), "seq_len": int(ids.shape[1])},
        "text": text, "results": results, "table": table, "tweak_seconds": run.seconds,
        "blocks": run.as_dict()["blocks"], "saved_to": str(saved),
        "total_seconds": time.perf_counter() - t_start,
    }
