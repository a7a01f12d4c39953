"""The command-line options shared by the commands, defined once.

Every command that quantizes (`quantize`, `tweak`, `run`) takes the same quantizer,
tweak, calibration and run options with the same names, aliases and defaults. The
quantizer and tweak defaults are read from the `QuantSpec` / `TweakSpec` dataclass
fields, so the command line cannot disagree with the Python API. The original
project's spellings (`--quantizer`, `--nbits`, `--save_dir`, `--num_samples`, ...) are
aliases, and list options take space- or comma-separated values
(`--grid-search-lr 0 0.0001 0.00001` or `--grid-search-lr 0,0.0001,0.00001`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex

import click

from normtweak import config
from normtweak.config import QUANT_METHODS, TWEAK_LOSSES, TWEAK_TARGETS, QuantSpec, TweakSpec

DEFAULT_NUM_SAMPLES = 128  # calibration samples (the paper's 128)
DEFAULT_SEQ_LEN = config.DEFAULT_SEQ_LEN
DEFAULT_JOINT_SEQ_LEN = config.DEFAULT_JOINT_SEQ_LEN
default_seq_len = config.default_seq_len

DEFAULT_EVAL_WINDOWS = 16  # 1024-token windows of a split scored per model
DEFAULT_DEVICE = "cpu"
USER_ERRORS = (ValueError, FileNotFoundError, OSError)


def spec_default(cls, name: str):
    """The default of dataclass field `name` of `cls` (QuantSpec, TweakSpec)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def _if_field(cls, name: str, make) -> list:
    """[make()] when `cls` has dataclass field `name`, else [] (fields added over time)."""
    return [make()] if any(f.name == name for f in dataclasses.fields(cls)) else []


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


def parse_floats(ctx, param, value):
    """'0,1e-4 1e-5' -> (0.0, 1e-4, 1e-5); None stays None."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in re.split(r"[,\s]+", value.strip()) if v)
    except ValueError as err:
        raise click.BadParameter(f"expected numbers (space- or comma-separated), got {value!r}") from err


DEFAULT_SCHEME = "W4A16"


def _scheme(ctx, param, value):
    try:
        QuantSpec.scheme(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    return value.upper()


def quant_options(fn):
    """--scheme --method --bits --group-size --symmetric and the GPTQ options; defaults from
    QuantSpec and the scheme (W4A16: 4-bit symmetric, group 128)."""
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
        click.option("--true-sequential/--no-true-sequential", default=False, show_default=True,
                     help="GPTQ: quantize a block's linears group by group, each group's "
                          "Hessian from the already quantized ones"),
        click.option("--quantize-head/--no-quantize-head", default=d("quantize_head"),
                     show_default=True, help="also quantize the LM head"),
        *_if_field(QuantSpec, "group_params", lambda: click.option(
            "--group-params", type=click.Choice(config.GROUP_PARAMS), default=d("group_params"),
            show_default=True, help="GPTQ without static groups: a group's parameters from "
                                    "the updated columns (ours) or as the reference code")),
    ])


def tweak_options(fn):
    """--lr --scale --iters --loss --target; defaults from TweakSpec."""
    d = functools.partial(spec_default, TweakSpec)
    return _decorate(fn, [
        click.option("--lr", type=float, default=d("lr"), show_default=True,
                     help="norm-tweak Adam learning rate of block 0"),
        click.option("--scale", type=float, default=d("scale"), show_default=True,
                     help="layer scale: block l of L trains at lr * (1 + scale * l / L)"),
        click.option("--iters", type=int, default=d("iters"), show_default=True,
                     help="passes over the calibration samples per block"),
        click.option("--loss", type=click.Choice(TWEAK_LOSSES), default=d("loss"),
                     show_default=True, help="tweak loss ('none': plain quantization)"),
        click.option("--target", type=click.Choice(TWEAK_TARGETS), default=d("target"),
                     show_default=True,
                     help="float targets from the quantized path's inputs (paper) or the float model's"),
        *_if_field(TweakSpec, "quant_params", lambda: click.option(
            "--quant-params", type=click.Choice(config.QUANT_PARAMS), default=d("quant_params"),
            show_default=True, help="also train each linear's clipping ('clip') and rounding "
                                    "('clip_round') with the norms (beyond the paper)")),
        *_if_field(TweakSpec, "quant_lr", lambda: click.option(
            "--quant-lr", type=float, default=d("quant_lr"),
            help="signed-step size for --quant-params [default: 1 / steps per block]")),
        *_if_field(TweakSpec, "end_to_end_iters", lambda: click.option(
            "--end-to-end-iters", type=int, default=d("end_to_end_iters"), show_default=True,
            help="after the block pass, passes of training every norm (final norm too) "
                 "against the float model's logits (KL); 0: off")),
        *_if_field(TweakSpec, "end_to_end_lr", lambda: click.option(
            "--end-to-end-lr", type=float, default=d("end_to_end_lr"), show_default=True,
            help="Adam learning rate of --end-to-end-iters")),
        *_if_field(TweakSpec, "keep_better", lambda: click.option(
            "--keep-better/--no-keep-better", default=d("keep_better"), show_default=True,
            help="restore a block as it started when training raised its calibration loss "
                 "(the 'paper' preset: off)")),
        *_if_field(TweakSpec, "best_step", lambda: click.option(
            "--best-step/--last-step", default=d("best_step"), show_default=True,
            help="end each block's training at the step with the lowest minibatch loss "
                 "(AutoRound's best-iteration rule) instead of the last step")),
        *([click.option("--preset", type=click.Choice(sorted(config.TWEAK_PRESETS)), default=None,
                        help="named tweak settings ('paper': Algorithm 1 as written); options "
                             "given on the command line override it")]
          if hasattr(config, "TWEAK_PRESETS") else []),
    ])


def device_option(fn):
    return click.option("--device", default=DEFAULT_DEVICE, show_default=True, callback=_device,
                        help="cpu, cuda, cuda:1 or auto; blocks are moved there one at a time")(fn)


def run_options(fn):
    """--device --seed --batch-size."""
    return _decorate(fn, [
        device_option,
        click.option("--seed", type=int, default=0, show_default=True,
                     help="seed of every random choice (calibration, sample order)"),
        click.option("--batch-size", "--batch_size", "batch_size", type=int,
                     default=spec_default(TweakSpec, "batch_size"), show_default=True,
                     help="calibration samples per forward pass"),
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
SEQ_LEN_TWEAK_HELP = (f"tokens per calibration sample  [default: {DEFAULT_SEQ_LEN}; "
                      f"{DEFAULT_JOINT_SEQ_LEN} for a tweak whose --quant-params train "
                      "(the joint preset)]")
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


TWEAK_EVAL_WINDOWS = 4  # what `tweak` scores at its end by default (a grid search: 16)


def tweak_eval_windows_option(fn):
    return click.option(
        "--eval-windows", type=click.IntRange(min=0), default=None,
        help=f"1024-token validation windows (--validation-text) on which the float, plainly "
             f"quantized and tweaked models are scored at the end; 0: skip [default: "
             f"{TWEAK_EVAL_WINDOWS}; a grid search selects on {DEFAULT_EVAL_WINDOWS}]")(fn)


def overwrite_option(fn):
    return click.option("--overwrite", is_flag=True,
                        help="replace an existing output that normtweak wrote (never other "
                             "files), and discard existing checkpoints")(fn)


def save_dir_option(required: bool = False, default=None, help: str = "output folder"):
    return click.option("--save-dir", "--save_dir", "save_dir", type=click.Path(file_okay=False),
                        required=required, default=default, help=help)


def _spec(cls, opts: dict):
    """cls(**the parsed options that are fields of cls)."""
    return cls(**{f.name: opts[f.name] for f in dataclasses.fields(cls)
                  if f.init and f.name in opts})


def quant_spec(opts: dict) -> QuantSpec:
    """QuantSpec from the parsed quant_options: the --scheme, overridden by the options given."""
    fields = {f.name for f in dataclasses.fields(QuantSpec) if f.init}
    given = {k: v for k, v in opts.items() if k in fields and v is not None}
    return QuantSpec.scheme(opts.get("scheme") or DEFAULT_SCHEME, **given)


def tweak_spec(opts: dict) -> TweakSpec:
    """TweakSpec from the parsed tweak_options and run_options; with --preset, the preset's
    fields, overridden by the options given on the command line."""
    preset = opts.get("preset")
    if not preset:
        return _spec(TweakSpec, opts)
    ctx = click.get_current_context()
    given = {k: v for k, v in opts.items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    return TweakSpec.preset(preset, **{f.name: given[f.name] for f in dataclasses.fields(TweakSpec)
                                       if f.name in given})


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class Command(click.Command):
    """A click command that keeps the arguments as typed (for the resume hint) and lets
    `list_options` take space-separated values: `--grid-search-lr 0 1e-4` = `0,1e-4`."""

    list_options: tuple[str, ...] = ()

    def __init__(self, *args, list_options=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.list_options = tuple(list_options)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["normtweak.argv"] = list(args)
        joined, i = [], 0
        while i < len(args):
            joined.append(args[i])
            if args[i] in self.list_options and i + 1 < len(args):
                values = [args[i + 1]]
                i += 2
                while i < len(args) and _NUMBER.match(args[i]):
                    values.append(args[i])
                    i += 1
                joined.append(",".join(values))
                continue
            i += 1
        return super().parse_args(ctx, joined)


def command_line(ctx: click.Context, add: tuple[str, ...] = ()) -> str:
    """The command as the user typed it (`normtweak tweak ...`), plus `add` if missing."""
    argv = list(ctx.meta.get("normtweak.argv", []))
    argv += [a for a in add if a not in argv]
    return shlex.join(["normtweak", ctx.info_name or "", *argv])
