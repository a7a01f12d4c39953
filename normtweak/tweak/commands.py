"""`normtweak tweak`: quantize a model and tweak it block by block; save it.

The options are the specs' fields (normtweak.options); everything that can be checked is
checked before the model is loaded: the specs, the output folders (writable, not ours to
replace unasked), the checkpoints, the calibration file, the corpora. The original project's
grid spellings (`--grid-search-lr`, `--grid-search-scale`) run `normtweak grid`.
"""

from __future__ import annotations

from pathlib import Path

import click

from normtweak import options as o
from normtweak.io.export import SAVE_FORMATS
from normtweak.options.checks import check_checkpoints, check_outputs, load_float

GRID_ALIASES = ("grid_search_lr", "grid_search_scale")


def _interrupted(ctx, checkpoint_dir) -> None:
    """After Ctrl-C: say what was saved and how to resume; exit 130 (as a shell does)."""
    from normtweak.tweak.checkpoint import describe_blocks, finished_blocks

    if checkpoint_dir is None:
        click.echo("\ninterrupted: nothing was saved (no --checkpoint-dir). Pass "
                   "--checkpoint-dir DIR to be able to resume an interrupted run.", err=True)
    else:
        done = finished_blocks(checkpoint_dir)
        click.echo(f"\ninterrupted: {describe_blocks(done)} in {checkpoint_dir}.", err=True)
        if done:
            click.echo("resume with:\n  " + o.command_line(ctx, ("--resume",)), err=True)
    ctx.exit(130)


def tweak_eval_windows_option(fn):
    return click.option(
        "--eval-windows", type=click.IntRange(min=0), default=o.TWEAK_EVAL_WINDOWS,
        show_default=True, help="1024-token validation windows (--validation-text) on which the "
        "float, plainly quantized and tweaked models are scored at the end; 0: skip")(fn)


@click.command("tweak", cls=o.Command, list_options=("--grid-search-lr", "--grid-search-scale"))
@o.model_option()
@o.calibration_options
@o.save_dir_option(required=True, help="folder for the tweaked model")
@o.overwrite_option
@o.quant_options
@o.tweak_options
@o.run_options
@o.checkpoint_options
@click.option("--validation-text", default="wikipedia", show_default=True,
              help="corpus whose validation split scores the result at the end")
@tweak_eval_windows_option
@click.option("--export-dequantized", type=click.Path(file_okay=False),
              help="also write a plain float folder here")
@click.option("--lazy-load", is_flag=True, help="read each block's weights from the model's "
              "safetensors only when its turn comes (models larger than RAM)")
@click.option("--allow-missing-weights", is_flag=True, help="load a model whose files lack some "
              "of its weights (they are randomly initialized): for experiments only")
@click.option("--quantized", "--precomputed-tensors-path", "quantized",
              type=click.Path(file_okay=False),
              help="a checkpoint someone else quantized (compressed-tensors, GPTQ, GGUF, "
                   "normtweak): its linears are kept and its norms tweaked (the 'paper' preset "
                   "unless --preset joint, which also tunes its clipping and rounding); "
                   "--model is the float model that gives the targets")
@click.option("--save-format", type=click.Choice(("auto", *SAVE_FORMATS)), default="auto",
              show_default=True, help="format of the saved model; auto: the one --quantized came "
              "in, else compressed-tensors. Scales are rounded to the format's dtype (float16 "
              "for gptq, gguf) before tweaking")
@click.option("--devices", default=None, hidden=True, help="gone: use torchrun (README, Scaling)")
@click.option("--grid-search-lr", callback=o.parse_floats, hidden=True,
              help="the original project's spelling of `normtweak grid --lrs`")
@click.option("--grid-search-scale", callback=o.parse_floats, hidden=True,
              help="the original project's spelling of `normtweak grid --scales`")
@click.option("--save-all", is_flag=True, hidden=True,
              help="with --grid-search-*: `normtweak grid --save-all`")
@click.pass_context
def tweak_cmd(ctx, **options):
    """Quantize a model and tweak it block by block (by default the joint method in W4A16)."""
    try:
        if any(options[k] for k in GRID_ALIASES):
            from normtweak.tweak.grid_commands import grid_from_tweak

            return grid_from_tweak(ctx, options)
        o.refuse(["save_all"], "without a grid search (`normtweak grid`)")
        plan = _plan(options)
        model, tok, loader = load_float(options["model_ref"], options["lazy_load"],
                                        options["allow_missing_weights"])
        imported = _imported(plan)
        _check_format(plan["save_format"], plan["quant"], model)
        from normtweak.calib.commands import command_calibration

        ids = command_calibration(plan["calib"], options, model, tok, plan["tweak"])
        try:
            _single(model, tok, ids, plan, options, loader, imported)
        except KeyboardInterrupt:
            _interrupted(ctx, options["checkpoint_dir"])
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err


def _plan(options: dict) -> dict:
    """The specs and every check that needs no model: before anything slow starts."""
    from normtweak.calib.commands import check_corpora, open_calibration
    from normtweak.io.scales import format_scale_dtype

    if options["devices"]:
        raise ValueError("--devices is gone: spread the work with torchrun instead, e.g. "
                         "`torchrun --nproc-per-node 2 -m normtweak tweak ... --device cuda`")
    quantized = options["quantized"]
    if quantized:
        if not Path(quantized).is_dir():
            raise FileNotFoundError(f"--quantized {quantized}: no such folder")
        o.refuse(o.QUANT_OPTIONS, "with --quantized (the checkpoint's own quantization is used)")
        if not options["preset"]:
            # The measured way to lift a checkpoint someone else quantized: the paper's norm
            # tweak keeps its codes (joint tuning of AutoRound-50's was worse on validation).
            options["preset"] = "paper"
            click.echo("--quantized: norm tweaking as in the paper (the checkpoint's codes are "
                       "kept); --preset joint also tunes its clipping and rounding")
    save_format = options["save_format"]
    if save_format == "auto":
        from normtweak.io.export import source_format

        save_format = source_format(quantized)["format"] if quantized else "compressed-tensors"
    check_checkpoints(options["checkpoint_dir"], options["resume"], options["overwrite"])
    plan = {"quant": o.quant_spec(options), "tweak": o.tweak_spec(options),
            "save_format": save_format, "quantized_path": quantized}
    dtype = format_scale_dtype(save_format)
    plan["run"] = o.run_spec(options, scale_dtype=str(dtype).removeprefix("torch.")
                             if dtype is not None else None)
    check_outputs(options, {"--save-dir": options["save_dir"],
                            "--export-dequantized": options["export_dequantized"],
                            "--checkpoint-dir": options["checkpoint_dir"]})
    plan["calib"] = open_calibration(options["data"]) if options["data"] else None
    check_corpora(options["from_text"],
                  options["validation_text"] if options["eval_windows"] else None)
    return plan


def _imported(plan: dict) -> dict | None:
    """The imported checkpoint's linears (and its spec into the plan), or None."""
    quantized = plan["quantized_path"]
    if not quantized:
        return None
    from normtweak.loading.foreign import imported_spec, load_quantized_linears

    imported = load_quantized_linears(quantized)
    quant = plan["quant"] = imported_spec(imported)
    click.echo(f"tweaking the linears of {quantized}: W{quant.bits}, group_size "
               f"{quant.group_size}, {'symmetric' if quant.symmetric else 'asymmetric'}; "
               f"saving as {plan['save_format']}")
    return imported


def _check_format(fmt, quant, model) -> None:
    """The save format can hold every block linear: refuse now, not after the tweak."""
    from normtweak import arch
    from normtweak.io.export import check_format

    adapter = arch.get_adapter(model)
    if fmt == "gguf":
        from normtweak.io.gguf import check_gguf_family

        check_gguf_family(adapter.family)
    blocks = adapter.get_blocks(model)
    check_format(fmt, quant, [(f"block {i}: {n}", lin.in_features, lin.out_features)
                              for i, b in enumerate(blocks) for n, lin in arch.block_linears(b)])


def _single(model, tok, ids, plan: dict, options: dict, loader, imported) -> None:
    from normtweak.calib.store import calibration_hash
    from normtweak.dist import on_main
    from normtweak.io import export_dequantized
    from normtweak.io.export import Provenance, write_model
    from normtweak.outputs import write_folder
    from normtweak.tweak.pipeline import tweak_model
    from normtweak.tweak.summary import ValidationScores, plain_copy

    quant, tweak, run = plan["quant"], plan["tweak"], plan["run"]
    windows = options["eval_windows"]
    if windows and loader is not None:
        click.echo("--lazy-load: no perplexity at the end (the whole model never sits in memory)")
    scores = ValidationScores(tok, options["validation_text"], windows if loader is None else 0,
                              run.device, echo=click.echo)
    scores.add("float", model)
    if scores.on:
        label = "plain " + ("checkpoint (--quantized)" if imported else f"{quant.method} "
                            "quantization")
        scores.add("quant", plain_copy(model, ids, quant, imported, run, tweak.batch_size),
                   label=label)
    result = tweak_model(model, ids, quant, tweak, run, block_loader=loader, imported=imported)
    scores.add("tweaked", model)
    extra = {"tweak_result": result.as_dict(),
             **({"validation": scores.record()} if scores.on else {})}
    path = on_main(write_folder, options["save_dir"], lambda p: write_model(
        model, tok, p, plan["save_format"],
        provenance=Provenance(quant, tweak, calibration_hash(ids), extra)),
        overwrite=run.overwrite, command="tweak")
    restored = sum(b.resumed for b in result.blocks)
    note = f" ({restored} restored from {run.checkpoint_dir})" if restored else ""
    click.echo(f"tweaked {len(result.blocks)} blocks{note} in {result.seconds:.1f} s; "
               f"saved the quantized model to {path}")
    if scores.on:
        click.echo(scores.summary())
    if options["export_dequantized"]:
        out = on_main(write_folder, options["export_dequantized"],
                      lambda p: export_dequantized(model, tok, p), overwrite=run.overwrite,
                      command="tweak --export-dequantized", flag="--export-dequantized")
        click.echo(f"dequantized float copy: {out}")
