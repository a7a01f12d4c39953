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
def quantize_cmd(model_ref, data, from_text, num_samples, seq_len, save_dir, overwrite, **opts):
    """Quantize a model's block linears (RTN or GPTQ) and save it."""
    from normtweak.outputs import check_target, write_folder

    try:
        spec = o.quant_spec(opts)
        check_target(save_dir, overwrite)
        from normtweak.calib.commands import check_corpora, command_calibration, open_calibration
        from normtweak.io.float_model import load_model
        from normtweak.quant.model import quantize_model

        calib = open_calibration(data) if data and spec.method == "gptq" else None
        if from_text and spec.method == "gptq":
            check_corpora(from_text)
        model, tokenizer = load_model(model_ref)
        calibration = None
        if spec.method == "gptq":
            calibration = command_calibration(calib, from_text, model, tokenizer, model_ref,
                                              num_samples, o.default_seq_len(seq_len),
                                              opts["seed"], opts["device"])
        start = time.perf_counter()
        quantize_model(model, spec, calibration=calibration, device=opts["device"],
                       batch_size=opts["batch_size"], true_sequential=opts["true_sequential"])
        elapsed = time.perf_counter() - start
        from normtweak.io import save_quantized

        calib_sha = None
        if calibration is not None:
            from normtweak.calib.store import calibration_hash

            calib_sha = calibration_hash(calibration)
        from normtweak.dist import on_main

        extra = {"quantize_seconds": round(elapsed, 2), "data": data, "from_text": from_text,
                 "true_sequential": opts["true_sequential"]}
        path = on_main(write_folder, save_dir, lambda p: save_quantized(
            model, tokenizer, p, quant=spec, calibration_sha256=calib_sha, extra=extra),
            overwrite=overwrite, command="quantize")
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"quantized {model_ref} ({spec.method}, W{spec.bits}, group_size "
               f"{spec.group_size}) in {elapsed:.1f} s; saved the quantized model to {path}")
