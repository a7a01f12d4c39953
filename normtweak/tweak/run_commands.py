"""`normtweak run`: the main job (calibration, quantize, tweak, evaluate, save)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from normtweak import options as o


@click.command("run", cls=o.Command)
@o.model_option("smollm2-135m")
@click.option("--calibration", type=click.Choice(["selfgen", "text"]), default="text",
              show_default=True, help="Wikipedia train windows, or samples the model writes "
                                      "itself (the paper's way)")
@click.option("--num-samples", "--num_samples", "num_samples", type=click.IntRange(min=1),
              default=32, show_default=True,
              help="calibration sequences (32 x 3 passes: the whole job took 10.4 minutes on 2 idle "
                   "CPU cores for SmolLM2 (benchmarks/main_job.py); benchmarks/main_job_size.py measured more samples or passes; "
                   "`normtweak tweak` defaults to the paper's 128)")
@click.option("--seq-len", "--seq_len", "seq_len", type=click.IntRange(min=1),
              default=None, help=o.SEQ_LEN_TWEAK_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="calibration cache folder [default: <cache>/calibration, shared with "
                   "generate-data]")
@click.option("--text", default="wikipedia", show_default=True,
              help="evaluation corpus (test split)")
@o.eval_windows_option
@o.save_dir_option(help="where the tweaked model goes [default: models/<model>-<spec>-tweaked]")
@o.overwrite_option
@o.quant_options
@o.tweak_options
@o.run_options
def run_cmd(**options):
    """The main job: calibration data, quantize, tweak, evaluate; print float | quantized | tweaked."""
    from normtweak.dist import on_main
    from normtweak.options.checks import check_outputs
    from normtweak.outputs import check_target, write_file
    from normtweak.tweak.run import MainJob, default_save_dir, main_job

    try:
        quant, tweak, run = o.quant_spec(options), o.tweak_spec(options), o.run_spec(options)
        save_dir = Path(options["save_dir"] or default_save_dir(options["model_ref"], quant))
        report_path = save_dir.parent / f"{save_dir.name}.run.json"
        check_outputs(options, {"--save-dir": str(save_dir)})
        check_target(report_path, run.overwrite, "report")
        click.echo(f"the tweaked model will be saved to {save_dir}, the report to {report_path}")
        job = MainJob(options["model_ref"], options["calibration"], options["num_samples"],
                      options["seq_len"], options["data_dir"], options["text"],
                      options["eval_windows"] or None, str(save_dir))
        report = main_job(job, quant, tweak, run, echo=click.echo)
        on_main(write_file, report_path, json.dumps(report, indent=2), overwrite=run.overwrite,
                flag="report")
        click.echo(f"saved the tweaked model to {report['saved_to']}; report: {report_path}")
    except KeyboardInterrupt:
        click.echo("\ninterrupted: nothing of this run was saved (the calibration cache is kept)",
                   err=True)
        sys.exit(130)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
