"""The README's main job: calibration data -> quantize -> tweak -> evaluate -> table.

Float, plain-quantized and tweaked models are scored with the same pinned
perplexity (non-overlapping 1024-token windows of the test split's documents, each document
from its own BOS: the definition of normtweak.evaluate.perplexity everywhere).
The plain-quantized and tweaked runs share block 0's captured inputs and targets.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from normtweak.calib.cache import CalibrationKey, calibration_ids  # benchmarks import them here
from normtweak.config import QuantSpec, RunSpec, TweakSpec, default_seq_len


def spec_slug(quant: QuantSpec) -> str:
    """A short name for a quantization spec: rtn-w4-g128, gptq-w3-pc, rtn-w4-pt-sym."""
    group = {-1: "pc", 0: "pt"}.get(quant.group_size, f"g{quant.group_size}")
    return f"{quant.method}-w{quant.bits}-{group}" + ("-sym" if quant.symmetric else "")


def default_save_dir(model_ref: str, quant: QuantSpec) -> Path:
    """models/<model>-<spec>-tweaked, relative to the current directory."""
    return Path("models") / f"{Path(str(model_ref).rstrip('/')).name}-{spec_slug(quant)}-tweaked"


@dataclass(frozen=True)
class MainJob:
    """What the main job runs on: the model, its calibration, where it is scored and saved.

    calibration: "selfgen" (the model writes it, the paper's way) or "text" (Wikipedia
    train windows); cached in `data_dir` (default: the calibration cache). text: the corpus
    whose test split is scored (each document from its own BOS, the first eval_windows
    windows). save_dir: default models/<model>-<spec>-tweaked. num_samples: 32, sized by
    benchmarks/main_job_size.py so the job runs in about 10 minutes on 2 CPU cores.
    """

    model: str = "smollm2-135m"
    calibration: str = "text"
    num_samples: int = 32
    seq_len: int | None = None
    data_dir: str | None = None
    text: str = "wikipedia"
    eval_windows: int | None = 16
    save_dir: str | None = None


def main_job(job: MainJob, quant: QuantSpec, tweak: TweakSpec, run: RunSpec = RunSpec(),
             echo=print) -> dict:
    """Run the whole pipeline once and return a report (also echoed as a table).

    The model stays on the CPU; run.device gets one block at a time (and the whole model
    only while a perplexity is computed). An existing output at the save folder is replaced
    only with run.overwrite (normtweak.outputs). seq_len: default 128, or 512 when `tweak`
    trains quantization parameters (normtweak.config.default_seq_len).
    """
    from normtweak.calib.store import calibration_hash
    from normtweak.common.tables import markdown_table
    from normtweak.dist import on_main
    from normtweak.evaluate import split_perplexity
    from normtweak.evaluate.report import compare_rows
    from normtweak.io import save_quantized
    from normtweak.loading.float import load_model
    from normtweak.outputs import check_target, write_folder
    from normtweak.tweak.pipeline import prepare_start, tweak_model

    seq_len = default_seq_len(job.seq_len, tweak)
    t_start = time.perf_counter()
    save_dir = check_target(job.save_dir or default_save_dir(job.model, quant), run.overwrite)
    from normtweak.assets import load_documents

    load_documents(job.text, "test")  # a mistyped corpus fails before the model loads
    model, tok = load_model(job.model)
    key = CalibrationKey(job.model, job.calibration, job.num_samples, seq_len, run.seed)
    calib = on_main(calibration_ids, model, tok, key, job.data_dir, echo,
                    run.device)  # made once, sent to all
    ids = calib.input_ids

    def score(m, label):
        echo(f"{label}: scoring perplexity on {job.eval_windows or 'all'} windows of "
             f"{job.text}/test ...")
        t0 = time.perf_counter()
        r = on_main(split_perplexity, m, tok, job.text, "test", max_windows=job.eval_windows,
                    device=run.device)
        echo(f"{label}: perplexity {r.ppl:.3f} ({r.windows} windows, "
             f"{time.perf_counter() - t0:.0f} s)")
        return asdict(r)

    results = {"float": score(model, "float")}
    start = prepare_start(model, ids, tweak.batch_size, run)
    plain = copy.deepcopy(model)
    tweak_model(plain, ids, quant, replace(tweak, loss="none"), run, start=start)
    results["quant"] = score(plain, f"plain quantization, no tweak ({spec_slug(quant)})")
    del plain
    result = tweak_model(model, ids, quant, tweak, run, start=start)
    results["tweaked"] = score(model, "tweaked")
    saved = on_main(write_folder, save_dir, lambda p: save_quantized(
        model, tok, p, quant=quant, tweak=tweak, calibration_sha256=calibration_hash(ids),
        extra={"tweak_result": result.as_dict()}), overwrite=run.overwrite, command="run")
    echo(f"saved the tweaked model to {saved}")
    rows = compare_rows(results, "float", "quant")
    table = markdown_table(rows, [("model", "model"), ("ppl", "perplexity"),
                                  ("bits_per_byte", "bits/byte"), ("word_ppl", "word ppl"),
                                  ("gap_recovered_%", "gap recovered %")])
    echo(f"\n{job.model}, {spec_slug(quant)}, tweak: {tweak_label(tweak)}; {job.calibration} "
         f"calibration {len(ids)}x{ids.shape[1]}; {job.text} test split, "
         f"{results['float']['windows']} x {results['float']['window']}-token windows")
    echo(table)
    return {
        "model": job.model, "quant": quant.as_dict(), "tweak": tweak.as_dict(),
        "calibration": {"method": job.calibration, "num_samples": len(ids),
                        "seq_len": int(ids.shape[1])},
        "text": job.text, "results": results, "table": table, "tweak_seconds": result.seconds,
        "blocks": result.as_dict()["blocks"], "saved_to": str(saved),
        "total_seconds": time.perf_counter() - t_start,
    }


def tweak_label(tweak: TweakSpec) -> str:
    """'joint (norms + clipping + rounding, rel_mse, 3 passes x batch 8)' or the paper's."""
    kind = "paper" if tweak.quant_params == "none" else "joint"
    parts = {"none": "norms", "clip": "norms + clipping", "clip_round":
             "norms + clipping + rounding"}[tweak.quant_params]
    return (f"{kind} ({parts}, {tweak.loss}, lr {tweak.lr:g} scale {tweak.scale:g}, "
            f"{tweak.iters} pass(es) x batch {tweak.batch_size})")
