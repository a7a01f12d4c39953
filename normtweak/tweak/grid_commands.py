"""`normtweak grid`: a grid search over (lr, scale), chosen on a validation split.

`normtweak tweak --grid-search-lr ... --grid-search-scale ...` (the original project's
spelling) runs the same search.
"""

from __future__ import annotations

from pathlib import Path

import click

from normtweak import options as o
from normtweak.options.checks import check_outputs, load_float

# tweak options a grid search has no use for
NOT_FOR_A_GRID = ("checkpoint_dir", "resume", "lazy_load", "quantized", "save_format",
                  "export_dequantized", "allow_missing_weights")


@click.command("grid", cls=o.Command, list_options=("--lrs", "--scales"))
@o.model_option()
@o.calibration_options
@o.save_dir_option(required=True, help="folder for grid.json, grid.png, best/ (and with "
                   "--save-all every point)")
@o.overwrite_option
@o.quant_options
@o.tweak_options
@o.run_options
@click.option("--activation-budget", default=None, metavar="SIZE",
              help="calibration activations kept in RAM (e.g. 8GiB); the rest go to a "
                   "memory-mapped file in $TMPDIR [default: all in RAM]")
@click.option("--lrs", callback=o.parse_floats,
              help="learning rates, space- or comma-separated: 0 0.0001 0.00001 [default: --lr]")
@click.option("--scales", callback=o.parse_floats,
              help="layer scales, space- or comma-separated: 1 5 [default: --scale]")
@click.option("--text", default="wikipedia", show_default=True,
              help="corpus whose validation split chooses the point (its test split is reported)")
@click.option("--windows", type=click.IntRange(min=1), default=o.DEFAULT_EVAL_WINDOWS,
              show_default=True, help="1024-token windows of each split scored per point")
@click.option("--save-all", is_flag=True, help="save every point's model, not only the best")
@click.pass_context
def grid_cmd(ctx, **options):
    """Tweak a fresh copy of the model at every (lr, scale); keep the best on validation."""
    try:
        run_grid(ctx, options)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err


def grid_from_tweak(ctx, options: dict) -> None:
    """`normtweak tweak --grid-search-lr ... --grid-search-scale ...`: the grid command."""
    o.refuse(NOT_FOR_A_GRID, "in a grid search (every point is one full run)")
    options = {**options, "lrs": options["grid_search_lr"],
               "scales": options["grid_search_scale"], "text": options["validation_text"],
               "windows": (options["eval_windows"] if o.given(["eval_windows"])
                           else o.DEFAULT_EVAL_WINDOWS)}
    run_grid(ctx, options)


def run_grid(ctx, options: dict) -> None:
    from normtweak.calib.commands import check_corpora, command_calibration, open_calibration
    from normtweak.config import GridSpec

    quant, tweak = o.quant_spec(options), o.tweak_spec(options)
    grid = GridSpec(lrs=options["lrs"] or (tweak.lr,), scales=options["scales"] or (tweak.scale,),
                    save_all=options["save_all"], text=options["text"],
                    windows=options["windows"] or None)
    run = o.run_spec(options)
    check_outputs(options, {"--save-dir": options["save_dir"]})
    calib = open_calibration(options["data"]) if options["data"] else None
    check_corpora(options["from_text"], grid.text)
    model, tok, _ = load_float(options["model_ref"])
    ids = command_calibration(calib, options, model, tok, tweak)
    try:
        lines = _grid(model, tok, ids, quant, tweak, grid, run, options["save_dir"])
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: the grid search wrote nothing to {options['save_dir']} (its "
                   f"points are not checkpointed; run it again)", err=True)
        ctx.exit(130)
    for line in lines:
        click.echo(line)


def _grid(model, tok, ids, quant, tweak, grid, run, save_dir) -> list[str]:
    """Run the grid into a staging folder beside save_dir; rename it into place at the end."""
    import shutil

    from normtweak.dist import on_main
    from normtweak.outputs import check_target, publish_folder, staging_folder
    from normtweak.tweak.grid import grid_search, summary_lines, write_grid

    target = check_target(save_dir, run.overwrite)
    stage = staging_folder(target)
    try:
        work = stage / "out"
        result, _ = grid_search(model, tok, ids, quant, tweak, grid, run, save_dir=str(work))
        for p in {id(p): p for p in result.points + [result.best] if p is not None}.values():
            if p.saved_to:
                p.saved_to = str(target / Path(p.saved_to).relative_to(work))
        on_main(write_grid, result, work)
        on_main(publish_folder, work, target, run.overwrite, "grid")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary_lines(result, target)
