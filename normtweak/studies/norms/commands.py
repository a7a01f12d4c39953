"""`normtweak bench-norms`: the norm benchmark (normtweak.studies.norms.bench) as a command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _command_line() -> str:
    """The command as typed, whether through `normtweak bench-norms` or benchmarks/norms.py."""
    if sys.argv[1:2] == ["bench-norms"]:
        return " ".join(["normtweak", *sys.argv[1:]])
    return " ".join(["python", *sys.argv])


@click.command("bench-norms")
@click.option("--hiddens", default=None, help="hidden sizes (default GPU 1024,2048,4096,8192,16384; CPU 1024,4096)")
@click.option("--rows", default=None, help="rows (default GPU 4096,32768; CPU 4096)")
@click.option("--dtypes", default="float32,bfloat16", show_default=True)
@click.option("--norms", "kinds", default="rms,layer", show_default=True)
@click.option("--impls", default="ours,eager,compile", show_default=True)
@click.option("--device", default=None, help="cuda or cpu (default: cuda when available)")
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--out", default=None, help="JSON path (default results/norms_<cpu|cuda>.json)")
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
def bench_norms(**options):
    """Time our norms (fwd, bwd, fwd+bwd) against eager torch and torch.compile."""
    import torch

    from normtweak.common.tables import markdown_table
    from normtweak.outputs import check_target, write_file
    from normtweak.studies.norms.bench import run

    device, overwrite = options["device"], options["overwrite"]
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    hiddens = (_ints(options["hiddens"]) if options["hiddens"]
               else ((1024, 2048, 4096, 8192, 16384) if gpu else (1024, 4096)))
    rows = _ints(options["rows"]) if options["rows"] else ((4096, 32768) if gpu else (4096,))
    path = Path(options["out"] or f"results/norms_{'cuda' if gpu else 'cpu'}.json")
    try:
        check_target(path, overwrite, "--out")
    except FileExistsError as err:
        raise click.ClickException(str(err)) from err
    report = run(hiddens, rows, tuple(options["dtypes"].split(",")),
                 tuple(options["kinds"].split(",")), device, tuple(options["impls"].split(",")))
    report["command"] = _command_line()
    cols = ["norm", "rows", "hidden", "dtype", "impl", "mode", "ms", "GB/s"]
    cols += [c for c in ("x_vs_eager", "x_vs_compile", "%_of_copy") if any(c in r for r in report["rows"])]
    table = [r for r in report["rows"] if r["impl"] == "ours"] or report["rows"]
    click.echo(f"device {report['device']}, triton {report['triton']}, copy {report['copy_GBps']:.1f} GB/s, "
               f"threads {report['threads']}")
    click.echo(markdown_table(table, cols))
    write_file(path, json.dumps(report, indent=2, default=str) + "\n", overwrite=overwrite)
    click.echo(f"wrote {path}")
    return report


def main() -> int:
    bench_norms.main(standalone_mode=False)
    return 0
