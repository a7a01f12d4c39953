"""`normtweak report`: what a tweak did, block by block (a table, and a PNG with --plot)."""

from __future__ import annotations

import click

from normtweak import options as o


@click.command("report")
@click.argument("run", type=click.Path(exists=True))
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="also draw the per-block losses into this PNG")
@o.overwrite_option
def report_cmd(**options):
    """Per-block losses of a tweaked model folder (or a `run` report): where the error is,
    which blocks training helped, which were put back."""
    from normtweak.evaluate.blocks import block_records, block_table, plot_blocks
    from normtweak.outputs import check_target

    try:
        blocks = block_records(options["run"])
        click.echo(block_table(blocks))
        back = sum(bool(b.get("kept_start")) for b in blocks)
        click.echo(f"\n{len(blocks)} blocks; {back} put back as they started")
        if options["plot"]:
            if not str(options["plot"]).endswith(".png"):
                raise ValueError(f"--plot {options['plot']}: give a .png path")
            o.check_writable(options["plot"], "--plot")
            check_target(options["plot"], options["overwrite"], "--plot")
            click.echo(f"wrote {plot_blocks(blocks, options['plot'], str(options['run']))}")
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
