"""`normtweak quantize`: RTN or GPTQ weight quantization of a model, saved to a folder."""

from __future__ import annotations

import time

import click

from normtweak import options as o


@click.command("quantize", cls=o.Command)
@o.model_option()
@o.calibration_options
@o.save_dir_option(required=True, help="folder for the quantized model")
@o.overwrite_option
@o.quant_options
@o.run_options
@click.option("--batch-size", "--batch_size", "batch_size", type=click.IntRange(min=1),
              default=8, show_default=True, help="GPTQ: calibration samples per forward pass")
@click.option("--allow-missing-weights", is_flag=True, help="load a model whose files lack some "
              "of its weights (they are randomly initialized): for experiments only")
def quantize_cmd(**options):
    """Quantize a model's block linears (RTN or GPTQ) and save it: no tweaking."""
    from normtweak.calib.commands import check_corpora, command_calibration, open_calibration
    from normtweak.options.checks import check_outputs, load_float

    try:
        spec, run = o.quant_spec(options), o.run_spec(options)
        if spec.method == "rtn":
            o.refuse([*o.CALIBRATION_OPTIONS, "batch_size"],
                     "with --method rtn (round-to-nearest uses no calibration data)")
        check_outputs(options, {"--save-dir": options["save_dir"]})
        calib = open_calibration(options["data"]) if options["data"] else None
        check_corpora(options["from_text"])
        model, tokenizer, _ = load_float(options["model_ref"],
                                         allow_missing=options["allow_missing_weights"])
        calibration = None
        if spec.method == "gptq":
            calibration = command_calibration(calib, options, model, tokenizer)
        from normtweak.quant.model import quantize_model

        start = time.perf_counter()
        quantize_model(model, spec, calibration=calibration, run=run,
                       batch_size=options["batch_size"])
        elapsed = time.perf_counter() - start
        path = _save(model, tokenizer, spec, calibration, options, elapsed)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"quantized {options['model_ref']} ({spec.method}, W{spec.bits}, group_size "
               f"{spec.group_size}, {spec.grid}) in {elapsed:.1f} s; saved the quantized model "
               f"to {path}")


def _save(model, tokenizer, spec, calibration, options, elapsed):
    from normtweak.calib.store import calibration_hash
    from normtweak.dist import on_main
    from normtweak.io import save_quantized
    from normtweak.outputs import write_folder

    calib_sha = calibration_hash(calibration) if calibration is not None else None
    extra = {"quantize_seconds": round(elapsed, 2), "data": options["data"],
             "from_text": options["from_text"]}
    return on_main(write_folder, options["save_dir"], lambda p: save_quantized(
        model, tokenizer, p, quant=spec, calibration_sha256=calib_sha, extra=extra),
        overwrite=options["overwrite"], command="quantize")
