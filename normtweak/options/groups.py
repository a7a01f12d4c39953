"""The options of the commands, by spec: QuantSpec's, TweakSpec's, RunSpec's, calibration."""

from __future__ import annotations

import dataclasses
import functools
import re

import click

from normtweak import config
from normtweak.config import (
    QUANT_METHODS,
    TWEAK_LOSSES,
    TWEAK_TARGETS,
    QuantSpec,
    RunSpec,
    TweakSpec,
)

DEFAULT_NUM_SAMPLES = 128  # calibration samples (the paper's 128)
DEFAULT_EVAL_WINDOWS = 16  # 1024-token windows of a split scored per model
TWEAK_EVAL_WINDOWS = 4  # what `tweak` scores at its end by default
DEFAULT_DEVICE = "cpu"
DEFAULT_SCHEME = "W4A16"

GPTQ_OPTIONS = ("damp", "act_order", "static_groups", "block_size", "true_sequential",
                "group_params")
QUANT_OPTIONS = ("scheme", "method", "bits", "group_size", "symmetric", "full_range",
                 "group_fallback", "quantize_head", *GPTQ_OPTIONS)
CALIBRATION_OPTIONS = ("data", "from_text", "num_samples", "seq_len")


def spec_default(cls, name: str):
    """The default of dataclass field `name` of `cls` (QuantSpec, TweakSpec, RunSpec)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def _decorate(fn, options):
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _device(ctx, param, value):
    if value is None or value == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter(f"{value}: CUDA is not available on this machine; use cpu")
    return value


def _scheme(ctx, param, value):
    try:
        QuantSpec.scheme(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    return value.upper()


def parse_floats(ctx, param, value):
    """'0,1e-4 1e-5' -> (0.0, 1e-4, 1e-5); None stays None."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in re.split(r"[,\s]+", value.strip()) if v)
    except ValueError as err:
        raise click.BadParameter(f"expected numbers (space- or comma-separated), got {value!r}") from err


def quant_options(fn):
    """QuantSpec's fields as options (--scheme first; --bits/--group-size/--symmetric override
    it); the defaults are QuantSpec's, W4A16."""
    d = functools.partial(spec_default, QuantSpec)
    return _decorate(fn, [
        click.option("--scheme", default=DEFAULT_SCHEME, show_default=True, callback=_scheme,
                     help="weight scheme by the field's name (compressed-tensors' presets): "
                          "W4A16 = 4-bit symmetric, group 128; W4A16_ASYM; W3A16; W8A16; ... "
                          "--bits/--group-size/--symmetric override it"),
        click.option("--method", "--quantizer", "method", type=click.Choice(QUANT_METHODS),
                     default=d("method"), show_default=True, help="weight quantizer"),
        click.option("--bits", "--nbits", "bits", type=int, default=None,
                     help="weight bits, 2..8 [default: the scheme's]"),
        click.option("--group-size", "--group_size", "group_size", type=int, default=None,
                     help="-1 one scale per output channel, 0 per tensor, g > 0 groups of g "
                          "inputs [default: the scheme's]; a layer g does not divide takes the "
                          "largest of 128/64/32 below g that does (see --no-group-fallback)"),
        click.option("--symmetric/--asymmetric", default=None,
                     help="symmetric (no zero point) or asymmetric grid [default: the scheme's]"),
        click.option("--full-range/--no-full-range", default=None,
                     help="symmetric grids: the group's larger extreme lands exactly on the "
                          "lowest code (llama.cpp's Q4_0, AutoRound's int_sym; step "
                          "max|w|/2^(bits-1), the scale signed); --no-full-range: GPTQ's "
                          "max|w|/((2^bits-1)/2) [default: full range for symmetric schemes]"),
        click.option("--group-fallback/--no-group-fallback", default=d("group_fallback"),
                     show_default=True, help="where the group size does not divide a layer's "
                     "inputs, use the largest of 128/64/32 that does (said once, recorded per "
                     "layer); off: refuse such a model"),
        click.option("--act-order/--no-act-order", default=d("act_order"), show_default=True,
                     help="GPTQ: quantize columns by decreasing Hessian diagonal"),
        click.option("--static-groups/--no-static-groups", default=d("static_groups"),
                     show_default=True, help="GPTQ: group scales fixed before act-order permutes"),
        click.option("--damp", type=float, default=d("damp"), show_default=True,
                     help="GPTQ: Hessian dampening, fraction of its mean diagonal"),
        click.option("--block-size", type=int, default=d("block_size"), show_default=True,
                     help="GPTQ: columns per lazy-update block"),
        click.option("--true-sequential/--no-true-sequential", default=d("true_sequential"),
                     show_default=True, help="GPTQ: quantize a block's linears group by group, "
                     "each group's Hessian from the already quantized ones"),
        click.option("--group-params", type=click.Choice(config.GROUP_PARAMS),
                     default=d("group_params"), show_default=True,
                     help="GPTQ without static groups: a group's parameters from the updated "
                          "columns (ours) or as the reference code"),
        click.option("--quantize-head/--no-quantize-head", default=d("quantize_head"),
                     show_default=True, help="also quantize the LM head (RTN)"),
    ])


def tweak_options(fn):
    """TweakSpec's fields as options, and --preset; the defaults are TweakSpec's (the joint
    method)."""
    d = functools.partial(spec_default, TweakSpec)
    return _decorate(fn, [
        click.option("--preset", type=click.Choice(sorted(config.TWEAK_PRESETS)), default=None,
                     help="named tweak settings: 'joint' (the defaults: norms + clipping + "
                          "rounding, rel_mse, keep_better) or 'paper' (Algorithm 1 as "
                          "written: the norms alone, distribution loss, one pass at batch 1); "
                          "options given on the command line override it"),
        click.option("--lr", type=float, default=d("lr"), show_default=True,
                     help="Adam learning rate of the norms at block 0"),
        click.option("--scale", type=float, default=d("scale"), show_default=True,
                     help="layer scale: block l of L trains at lr * (1 + scale * l / L)"),
        click.option("--iters", type=int, default=d("iters"), show_default=True,
                     help="passes over the calibration samples per block"),
        click.option("--batch-size", "--batch_size", "batch_size", type=int,
                     default=d("batch_size"), show_default=True,
                     help="calibration samples per training step (and per forward pass)"),
        click.option("--loss", type=click.Choice(TWEAK_LOSSES), default=d("loss"),
                     show_default=True, help="tweak loss ('none': plain quantization)"),
        click.option("--target", type=click.Choice(TWEAK_TARGETS), default=d("target"),
                     show_default=True, help="what the float block runs on for the targets: "
                     "the quantized path's inputs (the paper) or the float model's own stream"),
        click.option("--quant-params", type=click.Choice(config.QUANT_PARAMS),
                     default=d("quant_params"), show_default=True,
                     help="what else trains with the norms: each linear's clipping ('clip') "
                          "and rounding ('clip_round'), or nothing ('none', the paper)"),
        click.option("--quant-lr", type=float, default=d("quant_lr"),
                     help="signed-step size of --quant-params [default: min(1 / steps per "
                          "block, 0.02)]"),
        click.option("--keep-better/--no-keep-better", default=d("keep_better"),
                     show_default=True, help="restore a block as it started when training "
                     "raised its calibration loss (the 'paper' preset: off)"),
        click.option("--best-step/--last-step", default=d("best_step"), show_default=True,
                     help="end each block's training at the step with the lowest minibatch "
                          "loss (AutoRound's best-iteration rule) instead of the last step"),
        click.option("--train-dtype", type=click.Choice(config.TRAIN_DTYPES),
                     default=d("train_dtype"), show_default=True,
                     help="dtype of the training steps' forward (bfloat16: autocast, faster on "
                          "CPUs with bf16; everything else stays float32)"),
        click.option("--end-to-end-iters", type=int, default=d("end_to_end_iters"),
                     show_default=True, help="after the block pass, passes of training every "
                     "norm (final norm too) against the float model's logits (KL); 0: off"),
        click.option("--end-to-end-lr", type=float, default=d("end_to_end_lr"),
                     show_default=True, help="Adam learning rate of --end-to-end-iters"),
    ])


def device_option(fn):
    return click.option("--device", default=DEFAULT_DEVICE, show_default=True, callback=_device,
                        help="cpu, cuda, cuda:1 or auto; blocks are moved there one at a time")(fn)


def run_options(fn):
    """RunSpec's --device and --seed."""
    return _decorate(fn, [
        device_option,
        click.option("--seed", type=int, default=spec_default(RunSpec, "seed"), show_default=True,
                     help="seed of every random choice (calibration, sample order)"),
    ])


def checkpoint_options(fn):
    """RunSpec's checkpoints and memory: --checkpoint-dir --resume --activation-budget."""
    return _decorate(fn, [
        click.option("--checkpoint-dir", type=click.Path(file_okay=False),
                     help="write each finished block here, so an interrupted run can --resume"),
        click.option("--resume", is_flag=True,
                     help="continue an interrupted run from --checkpoint-dir"),
        click.option("--activation-budget", default=None, metavar="SIZE",
                     help="calibration activations kept in RAM (e.g. 8GiB); the rest go to a "
                          "memory-mapped file in $TMPDIR [default: all in RAM]"),
    ])


def calibration_options(fn):
    """--data --from-text --num-samples --seq-len (commands that take calibration data)."""
    return _decorate(fn, [
        click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help="calibration set (.safetensors from `normtweak generate-data`)"),
        click.option("--from-text", "--from_text", "from_text", default=None, metavar="CORPUS",
                     help=FROM_TEXT_HELP),
        click.option("--num-samples", "--num_samples", "num_samples", type=click.IntRange(min=1),
                     default=DEFAULT_NUM_SAMPLES, show_default=True, help=NUM_SAMPLES_HELP),
        click.option("--seq-len", "--seq_len", "seq_len", type=click.IntRange(min=1),
                     default=None, help=SEQ_LEN_TWEAK_HELP),
    ])


MODEL_HELP = "'smollm2-135m', 'minilm-l6', a local model folder or a hub id"
SEQ_LEN_HELP = "tokens per calibration sample"
SEQ_LEN_TWEAK_HELP = (f"tokens per calibration sample  [default: {config.DEFAULT_SEQ_LEN}; "
                      f"{config.DEFAULT_JOINT_SEQ_LEN} for a tweak whose --quant-params train "
                      "(the joint default)]")
NUM_SAMPLES_HELP = "calibration samples (the first N of --data)"
FROM_TEXT_HELP = ("cut calibration windows from a corpus's train split instead of generating "
                  "them (wikipedia, austen, a .txt/.jsonl)")


def model_option(default: str | None = None):
    """--model: required unless a default is given."""
    return click.option("--model", "model_ref", default=default, required=default is None,
                        show_default=default is not None, help=MODEL_HELP)


def eval_windows_option(fn):
    return click.option("--eval-windows", type=click.IntRange(min=0), default=DEFAULT_EVAL_WINDOWS,
                        show_default=True, help="1024-token windows scored per model")(fn)


def overwrite_option(fn):
    return click.option("--overwrite", is_flag=True,
                        help="replace an existing output that normtweak wrote (never other "
                             "files), and discard existing checkpoints")(fn)


def save_dir_option(required: bool = False, default=None, help: str = "output folder"):
    return click.option("--save-dir", "--save_dir", "save_dir", type=click.Path(file_okay=False),
                        required=required, default=default, help=help)
