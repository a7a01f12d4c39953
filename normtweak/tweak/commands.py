"""`normtweak tweak` and `normtweak run`: thin click commands over the tweak pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from normtweak import options as o
from normtweak.config import GridSpec
from normtweak.io.export import SAVE_FORMATS


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


def _check_checkpoints(checkpoint_dir, resume, overwrite) -> None:
    """Refuse early (before loading anything) to drop finished checkpoints unasked."""
    from normtweak.tweak.checkpoint import describe_blocks, finished_blocks

    if resume and checkpoint_dir is None:
        raise click.UsageError("--resume needs --checkpoint-dir (the folder of the interrupted run)")
    if checkpoint_dir is None:
        return
    done = finished_blocks(checkpoint_dir)
    if resume:
        if done:
            click.echo(f"{describe_blocks(done)} found in {checkpoint_dir}: resuming from "
                       f"block {len(done)}")
        else:
            click.echo(f"no checkpoints in {checkpoint_dir} yet: starting from block 0")
    elif done and not overwrite:
        raise ValueError(f"--checkpoint-dir {checkpoint_dir} already holds {describe_blocks(done)}; "
                         f"pass --resume to continue that run, or --overwrite to discard them "
                         f"and start over")


@click.command("tweak", cls=o.Command, list_options=("--grid-search-lr", "--grid-search-scale"))
@o.model_option()
@o.calibration_options
@o.save_dir_option(required=True, help="folder for the tweaked model (a grid search: for "
                   "grid.json, grid.png, best/ and with --save-all every point)")
@o.overwrite_option
@o.quant_options
@o.tweak_options
@o.run_options
@click.option("--grid-search-lr", callback=o.parse_floats,
              help="learning rates, space- or comma-separated: 0 0.0001 0.00001")
@click.option("--grid-search-scale", callback=o.parse_floats,
              help="layer scales, space- or comma-separated: 1 5")
@click.option("--validation-text", default="wikipedia", show_default=True,
              help="corpus whose validation split scores the result (and selects a grid point; "
                   "a grid search also reports its test split)")
@o.tweak_eval_windows_option
@click.option("--save-all", is_flag=True, help="grid search: save every point's model")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False),
              help="write each finished block here, so an interrupted run can --resume")
@click.option("--resume", is_flag=True, help="continue an interrupted run from --checkpoint-dir")
@click.option("--export-dequantized", type=click.Path(file_okay=False),
              help="also write a plain float folder here")
@click.option("--activation-budget", default=None, metavar="SIZE",
              help="calibration activations kept in RAM (e.g. 8GiB); the rest go to a "
                   "memory-mapped file in $TMPDIR [default: all in RAM]")
@click.option("--lazy-load", is_flag=True, help="read each block's weights from the model's "
              "safetensors only when its turn comes (models larger than RAM)")
@click.option("--devices", default=None, hidden=True, help="gone: use torchrun (README, Scaling)")
@click.option("--quantized", "--precomputed-tensors-path", "quantized",
              type=click.Path(file_okay=False),
              help="a checkpoint someone else quantized (compressed-tensors, GPTQ, GGUF, normtweak): "
                   "its linears are kept, only the norms (and --quant-params) are tweaked; "
                   "--model is the float model that gives the targets")
@click.option("--save-format", type=click.Choice(("auto", *SAVE_FORMATS)), default="auto",
              show_default=True, help="format of the saved model; auto: the one --quantized came "
              "in, else compressed-tensors. Scales are rounded to the format's dtype (float16 "
              "for gptq, gguf) before tweaking")
@click.pass_context
def tweak_cmd(ctx, model_ref, data, from_text, num_samples, seq_len, save_dir, overwrite,
              grid_search_lr, grid_search_scale, validation_text, eval_windows, save_all,
              checkpoint_dir, resume, export_dequantized, activation_budget, lazy_load, devices,
              quantized, save_format, **opts):
    """Quantize a model and tweak its norms block by block; save it (optionally a grid search)."""
    from normtweak.calib.commands import check_corpora, command_calibration, open_calibration
    from normtweak.outputs import check_target

    try:
        quant, spec = o.quant_spec(opts), o.tweak_spec(opts)
        from normtweak.tweak.activations import ActivationBudget

        budget = ActivationBudget(activation_budget)
        if devices:
            raise ValueError("--devices is gone: spread the work with torchrun instead, e.g. "
                             "`torchrun --nproc-per-node 2 -m normtweak tweak ... --device cuda`")
        grid = bool(grid_search_lr or grid_search_scale)
        if quantized and not opts.get("preset"):
            # The measured way to lift a checkpoint someone else quantized: the paper's norm
            # tweak keeps its codes (joint tuning of AutoRound-50's was worse on validation).
            opts["preset"] = "paper"
            spec = o.tweak_spec(opts)
            click.echo("--quantized: norm tweaking as in the paper (the checkpoint's codes are "
                       "kept); --preset joint also tunes its clipping and rounding")
        if eval_windows is None:
            eval_windows = o.DEFAULT_EVAL_WINDOWS if grid else o.TWEAK_EVAL_WINDOWS
        single_only = {"--lazy-load": lazy_load, "--checkpoint-dir": checkpoint_dir,
                       "--resume": resume, "--true-sequential": opts["true_sequential"],
                       "--quantized": quantized, "--save-format": save_format != "auto"}
        if quantized and not Path(quantized).is_dir():
            raise FileNotFoundError(f"--quantized {quantized}: no such folder")
        if save_format == "auto":
            from normtweak.io.export import source_format

            save_format = source_format(quantized)["format"] if quantized else "compressed-tensors"
        for flag, given in single_only.items():
            if grid and given:
                raise ValueError(f"{flag} works for one run, not a grid search")
        _check_checkpoints(checkpoint_dir, resume, overwrite)
        check_target(save_dir, overwrite)
        if export_dequantized:
            check_target(export_dequantized, overwrite, "--export-dequantized")
        calib = open_calibration(data) if data else None
        check_corpora(from_text, validation_text if grid else None)
        model, tok, loader = _load(model_ref, lazy_load)
        imported = None
        if quantized:
            from normtweak.io import imported_spec, load_quantized_linears

            imported = load_quantized_linears(quantized)
            quant = imported_spec(imported)
            click.echo(f"tweaking the linears of {quantized}: W{quant.bits}, group_size "
                       f"{quant.group_size}, {'symmetric' if quant.symmetric else 'asymmetric'}; "
                       f"saving as {save_format}")
        _check_format(save_format, quant, model)
        ids = command_calibration(calib, from_text, model, tok, model_ref, num_samples,
                                  o.default_seq_len(seq_len, spec),
                                  opts["seed"], opts["device"])
        if grid:
            try:
                _grid(model, tok, ids, quant, spec, grid_search_lr or (spec.lr,),
                      grid_search_scale or (spec.scale,), validation_text, eval_windows,
                      opts["device"], save_dir, save_all, opts["seed"], budget,
                      overwrite)
            except KeyboardInterrupt:
                click.echo(f"\ninterrupted: the grid search wrote nothing to {save_dir} (its "
                           f"points are not checkpointed; run it again)", err=True)
                ctx.exit(130)
            return
        try:
            _single(model, tok, ids, quant, spec, opts, save_dir, checkpoint_dir, resume,
                    overwrite, export_dequantized, budget, loader, imported, save_format,
                    validation_text, eval_windows)
        except KeyboardInterrupt:
            _interrupted(ctx, checkpoint_dir)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err


def _check_format(fmt, quant, model) -> None:
    """The save format can hold every block linear: refuse now, not after the tweak."""
    from normtweak import arch
    from normtweak.io.export import check_format

    blocks = arch.get_adapter(model).get_blocks(model)
    check_format(fmt, quant, [(f"block {i}: {n}", lin.in_features, lin.out_features)
                              for i, b in enumerate(blocks) for n, lin in arch.block_linears(b)])


def _load(model_ref, lazy):
    """(model, tokenizer, block loader or None)."""
    from normtweak.assets import resolve_model
    from normtweak.io.float_model import load_model

    if not lazy:
        return (*load_model(model_ref), None)
    from normtweak.tweak.offload import load_lazily

    model, tok, loader = load_lazily(resolve_model(model_ref))
    if tok is None:
        raise FileNotFoundError(f"{model_ref}: no tokenizer files in the model folder")
    return model, tok, loader


def _single(model, tok, ids, quant, spec, opts, save_dir, checkpoint_dir, resume, overwrite,
            export, budget, loader, imported=None, save_format="compressed-tensors",
            validation_text="wikipedia", eval_windows=0):
    from normtweak.calib.store import calibration_hash
    from normtweak.dist import on_main
    from normtweak.io import export_dequantized
    from normtweak.io.export import write_model
    from normtweak.io.scales import format_scale_dtype
    from normtweak.outputs import write_folder
    from normtweak.tweak.pipeline import tweak_model

    from normtweak.tweak.summary import ValidationScores, plain_copy

    if eval_windows and loader is not None:
        click.echo("--lazy-load: no perplexity at the end (the whole model never sits in memory)")
    scores = ValidationScores(tok, validation_text, eval_windows if loader is None else 0,
                              opts["device"], echo=click.echo)
    scores.add("float", model)
    if scores.on:
        scores.add("quant", plain_copy(model, ids, quant, imported, opts["device"],
                                       opts["batch_size"], opts["true_sequential"]),
                   label="plain " + ("checkpoint (--quantized)" if imported
                                     else f"{quant.method} quantization"))
    result = tweak_model(model, ids, quant, spec, device=opts["device"],
                         checkpoint_dir=checkpoint_dir, resume=resume, overwrite=overwrite,
                         seed=opts["seed"], activations=budget, block_loader=loader,
                         true_sequential=opts["true_sequential"], imported=imported,
                         scale_dtype=format_scale_dtype(save_format))
    scores.add("tweaked", model)
    extra = {"tweak_result": result.as_dict(), "true_sequential": opts["true_sequential"],
             **({"validation": scores.record()} if scores.on else {})}
    path = on_main(write_folder, save_dir, lambda p: write_model(
        model, tok, p, save_format, quant=quant, tweak=spec,
        calibration_sha256=calibration_hash(ids), extra=extra), overwrite=overwrite,
        command="tweak")
    restored = sum(b.resumed for b in result.blocks)
    note = f" ({restored} restored from {checkpoint_dir})" if restored else ""
    click.echo(f"tweaked {len(result.blocks)} blocks{note} in {result.seconds:.1f} s; "
               f"saved the quantized model to {path}")
    if scores.on:
        click.echo(scores.summary())
    if export:
        out = on_main(write_folder, export, lambda p: export_dequantized(model, tok, p),
                      overwrite=overwrite,
                           command="tweak --export-dequantized", flag="--export-dequantized")
        click.echo(f"dequantized float copy: {out}")


def _grid(model, tok, ids, quant, spec, lrs, scales, validation_text, windows, device, save_dir,
          save_all, seed, budget, overwrite):
    """Run the grid into a staging folder beside save_dir; rename it into place at the end."""
    import shutil

    from normtweak.assets import load_text
    from normtweak.dist import on_main
    from normtweak.outputs import check_target, publish_folder, staging_folder
    from normtweak.tweak.grid import grid_search, summary_lines, write_grid

    grid = GridSpec(lrs=lrs, scales=scales, save_all=save_all)
    target = check_target(save_dir, overwrite)
    stage = staging_folder(target)
    try:
        work = stage / "out"
        result, _ = grid_search(
            model, tok, ids, quant, spec, grid,
            validation_text=load_text(validation_text, "validation"),
            test_text=load_text(validation_text, "test"),
            max_windows=windows, device=device, save_dir=str(work), seed=seed, activations=budget,
        )
        for p in {id(p): p for p in result.points + [result.best] if p is not None}.values():
            if p.saved_to:
                p.saved_to = str(target / Path(p.saved_to).relative_to(work))
        on_main(write_grid, result, work)
        on_main(publish_folder, work, target, overwrite, "tweak (grid search)")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for line in summary_lines(result, target):
        click.echo(line)


@click.command("run", cls=o.Command)
@o.model_option("smollm2-135m")
@click.option("--calibration", type=click.Choice(["selfgen", "text"]), default="selfgen",
              show_default=True, help="self-generated (the paper's way) or Wikipedia train windows")
@click.option("--num-samples", "--num_samples", "num_samples", type=click.IntRange(min=1),
              default=o.DEFAULT_NUM_SAMPLES, show_default=True, help=o.NUM_SAMPLES_HELP)
@click.option("--seq-len", "--seq_len", "seq_len", type=click.IntRange(min=1),
              default=None, help=o.SEQ_LEN_TWEAK_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="calibration cache folder [default: <cache>/calibration, shared with "
                   "generate-data]")
@click.option("--text", default="wikipedia", show_default=True, help="evaluation corpus (test split)")
@o.eval_windows_option
@o.save_dir_option(help="where the tweaked model goes [default: models/<model>-<spec>-tweaked]")
@o.overwrite_option
@o.quant_options
@o.tweak_options
@o.run_options
def run_cmd(model_ref, calibration, num_samples, seq_len, data_dir, text, eval_windows, save_dir,
            overwrite, **opts):
    """The main job: calibration data, quantize, tweak, evaluate; print float | quantized | tweaked."""
    from normtweak.dist import on_main
    from normtweak.outputs import check_target, write_file
    from normtweak.tweak.run import default_save_dir, main_job

    try:
        quant, spec = o.quant_spec(opts), o.tweak_spec(opts)
        save_dir = Path(save_dir or default_save_dir(model_ref, quant))
        report_path = save_dir.parent / f"{save_dir.name}.run.json"
        check_target(save_dir, overwrite)
        check_target(report_path, overwrite, "report")
        click.echo(f"the tweaked model will be saved to {save_dir}, the report to {report_path}")
        report = main_job(model_ref, quant, spec, calibration=calibration, num_samples=num_samples,
                          seq_len=o.default_seq_len(seq_len, spec), data_dir=data_dir, text=text, eval_windows=eval_windows,
                          save_dir=str(save_dir), device=opts["device"], seed=opts["seed"],
                          echo=click.echo, overwrite=overwrite,
                          true_sequential=opts["true_sequential"])
        on_main(write_file, report_path, json.dumps(report, indent=2), overwrite=overwrite,
                flag="report")
        click.echo(f"saved the tweaked model to {report['saved_to']}; report: {report_path}")
    except KeyboardInterrupt:
        click.echo("\ninterrupted: nothing of this run was saved (the calibration cache is kept)",
                   err=True)
        sys.exit(130)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
