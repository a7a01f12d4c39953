"""From parsed options back to specs; options that would have no effect are refused by name."""

from __future__ import annotations

import dataclasses

import click

from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.options.groups import DEFAULT_SCHEME, GPTQ_OPTIONS


def given(names) -> list[str]:
    """The options among `names` (parameter names) that the user gave on the command line."""
    ctx = click.get_current_context()
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    return [n for n in names if ctx.get_parameter_source(n) in sources]


def flag(name: str) -> str:
    """The first spelling of option `name` of the current command ('--group-size')."""
    ctx = click.get_current_context()
    for p in ctx.command.params:
        if p.name == name:
            return p.opts[0]
    return "--" + name.replace("_", "-")


def refuse(names, why: str) -> None:
    """ValueError naming the first of `names` given on the command line: it has no effect."""
    found = given(names)
    if found:
        raise ValueError(f"{flag(found[0])} has no effect {why}")


def quant_spec(opts: dict) -> QuantSpec:
    """QuantSpec from the parsed quant_options: the --scheme, overridden by the options given."""
    fields = {f.name for f in dataclasses.fields(QuantSpec) if f.init}
    chosen = {k: v for k, v in opts.items() if k in fields and v is not None}
    scheme = opts.get("scheme") or DEFAULT_SCHEME
    if not chosen.get("symmetric", QuantSpec.scheme(scheme).symmetric):
        refuse(["full_range"], "with an asymmetric scheme (it chooses between symmetric grids)")
    quant = QuantSpec.scheme(scheme, **chosen)
    if quant.method == "rtn":
        refuse(GPTQ_OPTIONS, "with --method rtn (it is a GPTQ option)")
    return quant


def tweak_spec(opts: dict) -> TweakSpec:
    """TweakSpec from the parsed tweak_options; with --preset, the preset's fields, overridden
    by the options given on the command line. Options the result ignores are refused."""
    fields = [f.name for f in dataclasses.fields(TweakSpec) if f.init and f.name in opts]
    preset = opts.get("preset")
    if preset:
        tweak = TweakSpec.preset(preset, **{k: opts[k] for k in given(fields)})
    else:
        tweak = TweakSpec(**{k: opts[k] for k in fields})
    if tweak.quant_params == "none":
        refuse(["quant_lr"], "when no quantization parameters train (--quant-params none)")
    if tweak.end_to_end_iters == 0:
        refuse(["end_to_end_lr"], "without --end-to-end-iters")
    return tweak


def run_spec(opts: dict, **fields) -> RunSpec:
    """RunSpec from the parsed run and checkpoint options (and `fields` the command sets)."""
    names = [f.name for f in dataclasses.fields(RunSpec)]
    return RunSpec(**{**{k: opts[k] for k in names if k in opts}, **fields})


def check_writable(path, option: str) -> None:
    """Before any slow work: `path` (a file or folder to be written) can be created where it
    is asked for; else ValueError naming the option and why."""
    import os
    import secrets
    from pathlib import Path

    path = Path(path).absolute()
    parent = path.parent if not path.exists() else path if path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
    probe = parent / f".normtweak-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write in {parent} ({err.strerror})") from err
