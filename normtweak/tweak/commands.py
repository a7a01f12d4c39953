"""`normtweak tweak` and `normtweak run`: thin click commands over the tweak pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import click

from normtweak.config import GridSpec, QuantSpec, TweakSpec

USER_ERRORS = (ValueError, FileNotFoundError, OSError)


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from err


def quant_options(fn):
    """The quantizer flags shared by `tweak` and `run`."""
    for opt in reversed([
        click.option("--quantizer", type=click.Choice(["rtn", "gptq"]), default="rtn", show_default=True),
        click.option("--nbits", "--bits", "bits", type=int, default=4, show_default=True),
        click.option("--group-size", type=int, default=-1, show_default=True,
                     help="-1 per output channel, 0 per tensor, g > 0 groups of g inputs"),
        click.option("--symmetric/--asymmetric", default=False, show_default=True),
        click.option("--act-order/--no-act-order", default=False, help="GPTQ: quantize columns by "
                     "decreasing Hessian diagonal"),
    ]):
        fn = opt(fn)
    return fn


def tweak_options(fn):
    for opt in reversed([
        click.option("--lr", type=float, default=TweakSpec.lr, show_default=True),
        click.option("--scale", type=float, default=TweakSpec.scale, show_default=True,
                     help="layer scale: block l of L trains at lr * (1 + scale * l / L)"),
        click.option("--iters", type=int, default=1, show_default=True),
        click.option("--loss", type=click.Choice(["dist", "dist_mse", "mse", "none"]), default="dist",
                     show_default=True),
        click.option("--batch-size", type=int, default=1, show_default=True),
        click.option("--target", type=click.Choice(["quantized_input", "float_input"]),
                     default="quantized_input", show_default=True,
                     help="float targets from the quantized path's inputs (paper) or the float model's"),
        click.option("--device", default="cpu", show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
    ]):
        fn = opt(fn)
    return fn


def load_calibration_ids(data, from_text, tokenizer, num_samples, seq_len, seed):
    """Token ids from a calibration file (checked against the tokenizer) or a corpus's train split."""
    from normtweak.calib import calibration_from_text, load_calibration

    if data:
        calib = load_calibration(data, tokenizer)
        if num_samples:
            calib.check_size(min_samples=num_samples)
        return calib.input_ids[:num_samples] if num_samples else calib.input_ids
    if from_text:
        return calibration_from_text(tokenizer, from_text, num_samples or 128, seq_len, seed).input_ids
    raise click.UsageError("give calibration data: --data FILE.safetensors or --from-text CORPUS")


@click.command("tweak")
@click.option("--model", "model_ref", required=True, help="'smollm2-135m', a folder or a hub id")
@click.option("--data", type=click.Path(), help="calibration set (.safetensors) from generate-data")
@click.option("--from-text", help="cut calibration windows from a corpus's train split instead")
@click.option("--num-samples", type=int, default=None, help="use the first N calibration samples")
@click.option("--seq-len", type=int, default=512, show_default=True, help="with --from-text")
@click.option("--save_dir", "--save-dir", "save_dir", required=True, type=click.Path())
@quant_options
@tweak_options
@click.option("--grid-search-lr", callback=_floats, help="comma-separated learning rates")
@click.option("--grid-search-scale", callback=_floats, help="comma-separated layer scales")
@click.option("--validation-text", default="wikipedia", show_default=True,
              help="corpus whose validation split selects the grid point (test split reported)")
@click.option("--eval-windows", type=int, default=8, show_default=True)
@click.option("--save-all", is_flag=True, help="grid search: save every point's model")
@click.option("--checkpoint-dir", type=click.Path(), help="per-block checkpoints (for --resume)")
@click.option("--resume", is_flag=True, help="continue an interrupted run from --checkpoint-dir")
@click.option("--export-dequantized", type=click.Path(), help="also write a plain float folder here")
@click.option("--activation-budget", default=None, metavar="SIZE",
              help="calibration activations kept in RAM (e.g. 8GiB); the rest go to a "
                   "memory-mapped file in $TMPDIR [default: all in RAM]")
@click.option("--lazy-load", is_flag=True, help="read each block's weights from the model's "
              "safetensors only when its turn comes (models larger than RAM)")
@click.option("--devices", default=None, hidden=True, help="gone: use torchrun (README, Scaling)")
def tweak_cmd(model_ref, data, from_text, num_samples, seq_len, save_dir, quantizer, bits, group_size,
              symmetric, act_order, lr, scale, iters, loss, batch_size, target, device, seed, grid_search_lr,
              grid_search_scale, validation_text, eval_windows, save_all, checkpoint_dir, resume,
              export_dequantized, activation_budget, lazy_load, devices):
    """Quantize a model and tweak its norms block by block; save it (optionally a grid search)."""
    try:
        quant = QuantSpec(bits=bits, group_size=group_size, symmetric=symmetric, method=quantizer,
                          act_order=act_order)
        spec = TweakSpec(lr=lr, scale=scale, iters=iters, loss=loss, batch_size=batch_size,
                         target=target)
        from normtweak.tweak.activations import ActivationBudget

        budget = ActivationBudget(activation_budget)
        if devices:
            raise ValueError("--devices is gone: spread the work with torchrun instead, e.g. "
                             "`torchrun --nproc-per-node 2 -m normtweak tweak ... --device cuda`")
        grid = bool(grid_search_lr or grid_search_scale)
        if lazy_load and grid:
            raise ValueError("--lazy-load works for one run, not a grid search (each point "
                             "copies the whole float model)")
        model, tok, loader = _load(model_ref, lazy_load)
        ids = load_calibration_ids(data, from_text, tok, num_samples, seq_len, seed)
        if grid:
            _grid(model, tok, ids, quant, spec, grid_search_lr or (lr,), grid_search_scale or (scale,),
                  validation_text, eval_windows, device, save_dir, save_all, seed, budget)
            return
        _single(model, tok, ids, quant, spec, device, save_dir, checkpoint_dir, resume, seed,
                export_dequantized, budget, loader)
    except USER_ERRORS as err:
        raise click.ClickException(str(err)) from err


def _load(model_ref, lazy):
    """(model, tokenizer, block loader or None)."""
    from normtweak.assets import load_model, resolve_model

    if not lazy:
        return (*load_model(model_ref), None)
    from normtweak.tweak.offload import load_lazily

    model, tok, loader = load_lazily(resolve_model(model_ref))
    if tok is None:
        raise FileNotFoundError(f"{model_ref}: no tokenizer files in the model folder")
    return model, tok, loader


def _single(model, tok, ids, quant, spec, device, save_dir, checkpoint_dir, resume, seed, export,
            budget, loader):
    from normtweak.dist import on_main
    from normtweak.io import export_dequantized, save_quantized
    from normtweak.tweak.checkpoint import calibration_hash
    from normtweak.tweak.pipeline import tweak_model

    result = tweak_model(model, ids, quant, spec, device=device, checkpoint_dir=checkpoint_dir,
                         resume=resume, seed=seed, activations=budget, block_loader=loader)
    path = on_main(save_quantized, model, tok, save_dir, quant=quant, tweak=spec,
                          calibration_sha256=calibration_hash(ids),
                          extra={"tweak_result": result.as_dict()})
    click.echo(f"tweaked {len(result.blocks)} blocks in {result.seconds:.1f} s; saved to {path}")
    if export:
        click.echo(f"dequantized float copy: {on_main(export_dequantized, model, tok, export)}")


def _grid(model, tok, ids, quant, spec, lrs, scales, validation_text, windows, device, save_dir,
          save_all, seed, budget):
    from normtweak.assets import load_text
    from normtweak.dist import on_main
    from normtweak.evaluate.report import gap_recovered
    from normtweak.tweak.grid import grid_search, write_grid

    grid = GridSpec(lrs=lrs, scales=scales, save_all=save_all)
    result, _ = grid_search(
        model, tok, ids, quant, spec, grid,
        validation_text=load_text(validation_text, "validation"),
        test_text=load_text(validation_text, "test"),
        max_windows=windows, device=device, save_dir=save_dir, seed=seed, activations=budget,
    )
    json_path, png_path = on_main(write_grid, result, save_dir)
    click.echo(f"float: validation {result.float_ppl['validation']:.3f}  test {result.float_ppl['test']:.3f}")
    click.echo(f"quantized, no tweak: validation {result.quant_ppl['validation']:.3f}  "
               f"test {result.quant_ppl['test']:.3f}")
    click.echo(f"{'lr':>10} {'scale':>6} {'val ppl':>9} {'test ppl':>9} {'gap rec. %':>10}")
    for p in result.points:
        gap = gap_recovered(result.float_ppl["test"], result.quant_ppl["test"], p.test_ppl)
        mark = "  <- best (validation)" if p is result.best else ""
        mark = f"  failed: {p.error}" if p.error else mark
        click.echo(f"{p.lr:>10g} {p.scale:>6g} {p.validation_ppl:>9.3f} {p.test_ppl:>9.3f} {gap:>10.1f}{mark}")
    click.echo(f"saved best model to {result.best.saved_to}; grid: {json_path}, {png_path}")


@click.command("run")
@click.option("--model", "model_ref", default="smollm2-135m", show_default=True)
@click.option("--calibration", type=click.Choice(["selfgen", "text"]), default="selfgen",
              show_default=True, help="self-generated (the paper's way) or Wikipedia train windows")
@click.option("--num-samples", type=int, default=128, show_default=True)
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--data-dir", type=click.Path(), default="data", show_default=True)
@click.option("--text", default="wikipedia", show_default=True, help="evaluation corpus (test split)")
@click.option("--eval-windows", type=int, default=16, show_default=True,
              help="1024-token windows of the test split scored per model")
@click.option("--save_dir", "--save-dir", "save_dir", type=click.Path(), default=None,
              help="where the tweaked model goes (default models/<model>-<spec>-tweaked)")
@quant_options
@tweak_options
def run_cmd(model_ref, calibration, num_samples, seq_len, data_dir, text, eval_windows, save_dir,
            quantizer, bits, group_size, symmetric, act_order, lr, scale, iters, loss, batch_size,
            target, device, seed):
    """The main job: calibration data, quantize, tweak, evaluate; print float | quantized | tweaked."""
    try:
        from normtweak.dist import on_main
        from normtweak.tweak.run import main_job

        quant = QuantSpec(bits=bits, group_size=group_size, symmetric=symmetric, method=quantizer,
                          act_order=act_order)
        spec = TweakSpec(lr=lr, scale=scale, iters=iters, loss=loss, batch_size=batch_size,
                         target=target)
        report = main_job(model_ref, quant, spec, calibration=calibration, num_samples=num_samples,
                          seq_len=seq_len, data_dir=data_dir, text=text, eval_windows=eval_windows,
                          save_dir=save_dir, device=device, seed=seed, echo=click.echo)
        out = Path(report["saved_to"]).parent / f"{Path(report['saved_to']).name}.run.json"
        on_main(out.write_text, json.dumps(report, indent=2))
        click.echo(f"report: {out}")
    except USER_ERRORS as err:
        raise click.ClickException(str(err)) from err

