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

from normtweak.calib.cache import calibration_ids  # benchmarks import it from here
from normtweak.config import QuantSpec, TweakSpec, default_seq_len


def spec_slug(quant: QuantSpec) -> str:
    """A short name for a quantization spec: rtn-w4-g128, gptq-w3-pc, rtn-w4-pt-sym."""
    group = {-1: "pc", 0: "pt"}.get(quant.group_size, f"g{quant.group_size}")
    return f"{quant.method}-w{quant.bits}-{group}" + ("-sym" if quant.symmetric else "")


def default_save_dir(model_ref: str, quant: QuantSpec) -> Path:
    """models/<model>-<spec>-tweaked, relative to the current directory."""
    return Path("models") / f"{Path(str(model_ref).rstrip('/')).name}-{spec_slug(quant)}-tweaked"


def main_job(model_ref: str, quant: QuantSpec, tweak: TweakSpec, *, calibration: str = "selfgen",
             num_samples: int = 128, seq_len: int | None = None, data_dir: str | None = None,
             text: str = "wikipedia", eval_windows: int | None = 16, save_dir: str | None = None,
             device: str = "cpu", seed: int = 0, echo=print, overwrite: bool = False,
             true_sequential: bool = False) -> dict:
    """Run the whole pipeline once and return a report (also echoed as a table).

    The model stays on the CPU; `device` gets one block at a time (and the whole model
    only while a perplexity is computed). save_dir: default models/<model>-<spec>-tweaked;
    an existing output there is replaced only with `overwrite` (normtweak.outputs).
    seq_len: default 128, or 512 when `tweak` trains quantization parameters
    (normtweak.config.default_seq_len).
    """
    from normtweak.assets import load_text
    from normtweak.calib.store import calibration_hash
    from normtweak.common.tables import markdown_table
    from normtweak.dist import on_main
    from normtweak.evaluate import perplexity
    from normtweak.evaluate.report import compare_rows
    from normtweak.io import save_quantized
    from normtweak.io.float_model import load_model
    from normtweak.outputs import check_target, write_folder
    from normtweak.tweak.pipeline import prepare_start, tweak_model

    seq_len = default_seq_len(seq_len, tweak)
    t_start = time.perf_counter()
    save_dir = check_target(save_dir or default_save_dir(model_ref, quant), overwrite)
    test_text = load_text(text, "test")
    model, tok = load_model(model_ref)
    calib = on_main(calibration_ids, model, tok, model_ref, calibration, num_samples, seq_len,
                    data_dir, seed, echo, device)  # made (or read) once, sent to every rank
    ids = calib.input_ids

    def score(m, label):
        echo(f"{label}: scoring perplexity on {eval_windows or 'all'} windows of {text}/test ...")
        t0 = time.perf_counter()
        r = on_main(perplexity, m, tok, test_text, max_windows=eval_windows, device=device)
        echo(f"{label}: perplexity {r.ppl:.3f} ({r.windows} windows, {time.perf_counter() - t0:.0f} s)")
        return asdict(r)

    results = {"float": score(model, "float")}
    start = prepare_start(model, ids, tweak.batch_size, device)
    plain = copy.deepcopy(model)
    tweak_model(plain, ids, quant, replace(tweak, loss="none"), device=device, start=start, seed=seed,
                true_sequential=true_sequential)
    results["quant"] = score(plain, f"plain quantization, no tweak ({spec_slug(quant)})")
    del plain
    run = tweak_model(model, ids, quant, tweak, device=device, start=start, seed=seed,
                      true_sequential=true_sequential)
    results["tweaked"] = score(model, "tweaked")
    saved = on_main(write_folder, save_dir, lambda p: save_quantized(
        model, tok, p, quant=quant, tweak=tweak, calibration_sha256=calibration_hash(ids),
        extra={"tweak_result": run.as_dict(), "true_sequential": true_sequential}),
        overwrite=overwrite, command="run")
    echo(f"saved the tweaked model to {saved}")
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
