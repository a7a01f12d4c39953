"""`normtweak quantize`: RTN or GPTQ weight quantization of a model, saved to a folder."""

from __future__ import annotations

import time

import click

from normtweak.config import QUANT_METHODS


@click.command("quantize")
@click.option("--model", "model_ref", required=True,
              help="'smollm2-135m', 'minilm-l6', a local folder or a hub id.")
@click.option("--bits", type=int, default=4, show_default=True, help="2..8")
@click.option("--group-size", "--group_size", "group_size", type=int, default=128,
              show_default=True, help="-1 per output channel, 0 per tensor, or a divisor of "
              "every layer's in_features.")
@click.option("--method", type=click.Choice(QUANT_METHODS), default="rtn", show_default=True)
@click.option("--symmetric/--asymmetric", default=False, show_default=True)
@click.option("--data", "data", type=click.Path(dir_okay=False), default=None,
              help="Calibration set (.safetensors from `normtweak generate-data`); GPTQ needs it.")
@click.option("--num-samples", type=int, default=None, help="Use only the first N samples.")
@click.option("--damp", type=float, default=0.01, show_default=True)
@click.option("--act-order/--no-act-order", default=False, show_default=True)
@click.option("--static-groups/--no-static-groups", default=False, show_default=True)
@click.option("--block-size", type=int, default=128, show_default=True, help="GPTQ lazy block.")
@click.option("--true-sequential/--no-true-sequential", default=False, show_default=True,
              help="GPTQ: quantize a block's linears group by group (one pass per group).")
@click.option("--quantize-head/--no-quantize-head", default=False, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--save-dir", "--save_dir", "save_dir", type=click.Path(file_okay=False),
              required=True)
def quantize_cmd(model_ref, bits, group_size, method, symmetric, data, num_samples, damp,
                 act_order, static_groups, block_size, true_sequential, quantize_head, device,
                 batch_size, save_dir):
    """Quantize a model's block linears (RTN or GPTQ) and save it."""
    from normtweak.config import QuantSpec

    try:
        spec = QuantSpec(bits=bits, group_size=group_size, symmetric=symmetric, method=method,
                         damp=damp, act_order=act_order, block_size=block_size,
                         static_groups=static_groups, quantize_head=quantize_head)
        if method == "gptq" and data is None:
            raise ValueError("--method gptq needs --data CALIB.safetensors (make one with "
                             "`normtweak generate-data`)")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {num_samples}")
        from normtweak.assets import load_model
        from normtweak.quant.model import quantize_model

        model, tokenizer = load_model(model_ref)
        calibration = None
        if data is not None and method == "gptq":
            from normtweak.calib.store import load_calibration

            calibration = load_calibration(data, tokenizer).input_ids[:num_samples]
        start = time.perf_counter()
        quantize_model(model, spec, calibration=calibration, device=device,
                       batch_size=batch_size, true_sequential=true_sequential)
        elapsed = time.perf_counter() - start
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    try:
        from normtweak.io import save_quantized
    except ImportError as err:
        raise click.ClickException(f"saving needs normtweak.io.save_quantized: {err}") from err
    try:
        calib_sha = None
        if calibration is not None:
            from normtweak.tweak.checkpoint import calibration_hash

            calib_sha = calibration_hash(calibration)
        from normtweak.dist import on_main

        path = on_main(save_quantized, model, tokenizer, save_dir, quant=spec,
                              calibration_sha256=calib_sha,
                              extra={"quantize_seconds": round(elapsed, 2), "data": data,
                                     "true_sequential": true_sequential})
    except (ValueError, FileNotFoundError, OSError) as err:
        raise click.ClickException(f"could not save to {save_dir}: {err}") from err
    click.echo(f"quantized {model_ref} ({method}, W{bits}, group_size {group_size}) in "
               f"{elapsed:.1f} s; saved to {path or save_dir}")
