"""`normtweak precision`: the precision study from the command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.command("precision")
@click.option("--model", default="classifier", show_default=True,
              type=click.Choice(["classifier", "minilm", "distilbert"]),
              help="our small transformer, MiniLM (offline) or DistilBERT (online), norms swapped to --norm")
@click.option("--data", default="rotten_tomatoes", show_default=True,
              help="rotten_tomatoes, convention (offline); ag_news, dbpedia_14 (online)")
@click.option("--precisions", default="fp32,bf16,int8-toy,w4-rtn,w4-rtn-tweak", show_default=True)
@click.option("--seeds", default="0", show_default=True, help="comma-separated; 3 seeds give mean ± std")
@click.option("--train-size", type=int, default=5000, show_default=True)
@click.option("--test-size", type=int, default=1000, show_default=True)
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--norm", type=click.Choice(["rms", "layer"]), default="rms", show_default=True)
@click.option("--tweak-lr", type=float, default=1e-4, show_default=True, help="norm-tweak Adam lr (the -tweak modes)")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--out-dir", default="results/precision", show_default=True)
@click.option("--overwrite", is_flag=True, help="replace the summary files of an earlier run")
def precision_cmd(**options):
    """Train a classifier and compare precisions: accuracy, time, memory (JSON per run + table)."""
    import torch

    from normtweak.outputs import check_target, write_file
    from normtweak.studies.precision.run import StudySpec, markdown, run_study

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    t0 = time.perf_counter()
    model, data, norm, overwrite = (options["model"], options["data"], options["norm"],
                                    options["overwrite"])
    out = Path(options["out_dir"])
    md_path, json_path = out / f"{model}_{data}_{norm}.md", out / f"{model}_{data}_{norm}.json"
    try:
        check_target(md_path, overwrite, "--out-dir")
        check_target(json_path, overwrite, "--out-dir")
        spec = StudySpec(model=model, data=data,
                         precisions=tuple(options["precisions"].split(",")),
                         seeds=tuple(int(s) for s in options["seeds"].split(",")),
                         train_size=options["train_size"], test_size=options["test_size"],
                         epochs=options["epochs"], batch_size=options["batch_size"], norm=norm,
                         tweak_lr=options["tweak_lr"])
        report = run_study(spec, device=options["device"], out_dir=options["out_dir"],
                           echo=lambda line: None)
    except (ValueError, FileNotFoundError, OSError) as err:
        raise click.ClickException(str(err)) from err
    args = sys.argv[2:] if sys.argv[1:2] == ["precision"] else sys.argv[1:]  # CLI or examples/ wrapper
    command = "normtweak precision " + " ".join(args)
    text = markdown(report, command) + f"\nwall time {time.perf_counter() - t0:.0f} s\n"
    click.echo(text)
    write_file(md_path, text, overwrite=overwrite)
    write_file(json_path, json.dumps({"command": command, **report}, indent=2, default=str) + "\n",
               overwrite=overwrite)
    click.echo(f"wrote {md_path} and {json_path}")
