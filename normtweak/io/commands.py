"""`normtweak export`: convert a quantized folder to the format a serving stack reads."""

from __future__ import annotations

import click

from normtweak import options as o
from normtweak.io.export import EXPORT_FORMATS


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True),
              help="a quantized folder (normtweak, compressed-tensors, GPTQ, or one .gguf file)")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="compressed-tensors",
              show_default=True, help="compressed-tensors: vLLM/SGLang/transformers; gptq; "
              "gguf: llama.cpp; float: dequantized")
@click.option("--save_dir", "--save-dir", "save_dir", required=True, type=click.Path())
@click.option("--overwrite", is_flag=True, help="replace a non-empty save_dir")
@click.option("--gptq-version", type=click.Choice(["1", "2"]), default="2", show_default=True,
              help="GPTQ checkpoint_format: 2 = gptq_v2; 1 = gptq, only when exact")
@click.option("--gguf-type", type=click.Choice(["Q4_0", "Q4_1", "Q8_0"]), default=None,
              help="GGUF tensor type (default: the one that holds the model exactly)")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="--format float: the dtype of the weights [default: the scales' dtype, "
                   "float32 for normtweak's own folders: exact]")
def export_cmd(model_dir, fmt, save_dir, overwrite, gptq_version, gguf_type, dtype):
    """Write a quantized model in another format (refuses what the format can't hold)."""
    from normtweak.io.export import export_quantized

    try:
        path = export_quantized(model_dir, fmt, save_dir, overwrite=overwrite,
                                gptq_version=int(gptq_version), gguf_type=gguf_type,
                                dtype=dtype)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"exported {model_dir} as {fmt} to {path}")
