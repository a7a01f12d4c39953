"""The `normtweak` command line: thin click commands that parse, call the API, print.

Commands live beside the code they drive (`normtweak/<area>/commands.py`) and are
imported lazily, so `normtweak --help` stays fast. Register a command with one line
in COMMANDS: name -> "module:function".
"""

from __future__ import annotations

import importlib
import os

import click

COMMANDS: dict[str, str] = {
    "generate-data": "normtweak.calib.commands:generate_data",
    "eval": "normtweak.evaluate.commands:eval_cmd",
    "quantize": "normtweak.quant.commands:quantize_cmd",
    "tweak": "normtweak.tweak.commands:tweak_cmd",
    "grid": "normtweak.tweak.grid_commands:grid_cmd",
    "run": "normtweak.tweak.run_commands:run_cmd",
    "bench-norms": "normtweak.studies.norms.commands:bench_norms",
    "precision": "normtweak.studies.precision.commands:precision_cmd",
    "export": "normtweak.io.commands:export_cmd",
    "report": "normtweak.evaluate.report_commands:report_cmd",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


def _set_cache(ctx, param, value):
    if value:  # the edge: read once here and by normtweak.outputs.user_cache_dir
        os.environ["NORMTWEAK_CACHE"] = str(value)
    return value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="normtweak")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, expose_value=False,
              callback=_set_cache, is_eager=True,
              help="normtweak's cache (converted offline models, calibration sets) "
                   "[default: $NORMTWEAK_CACHE, else ~/.cache/normtweak]")
@click.option("--dist-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="under torchrun: seconds a rank waits for a silent one before the job "
                   "fails [default: $NORMTWEAK_DIST_TIMEOUT, else 600 on CPUs, 1800 with CUDA]")
def main(dist_timeout) -> None:
    """normtweak: low-bit post-training quantization with norm tweaking."""
    from normtweak.dist import init_from_env

    _one_line_warnings()
    try:  # under torchrun: join the process group (no-op otherwise)
        init_from_env(dist_timeout)
    except ValueError as err:  # a bad $NORMTWEAK_DIST_TIMEOUT
        raise click.ClickException(str(err)) from err


def _one_line_warnings() -> None:
    """On the console, normtweak's own warnings read as one line ("warning: ..."), without the
    source line Python adds; other libraries' warnings keep Python's format."""
    import warnings

    python_format = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):
        if category.__module__.startswith("normtweak."):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def _default(p: click.Option) -> str:
    if p.required:
        return "required"
    if p.is_flag and p.secondary_opts:  # an on/off pair; None: its help says what decides
        return "-" if p.default is None else f"`{p.opts[0] if p.default else p.secondary_opts[0]}`"
    if p.is_flag:
        return "off"
    if p.default is None or type(p.default).__name__ == "Sentinel" or p.default == ():
        return "-"
    return f"`{p.default}`"


def _help(p: click.Option) -> str:
    text = " ".join((p.help or "").split())
    return text.replace("|", "\\|")


def options_markdown() -> str:
    """A Markdown table of every option of every command, from the click definitions.

    One row per option spelling, default and help; the commands sharing it are listed
    together. docs/options.md holds this table (scripts/options_page.py writes it; a test
    checks it).
    """
    rows: dict[tuple, list[str]] = {}
    commands = [("normtweak OPTION COMMAND", main)] + [
        (name, main.get_command(click.Context(main), name)) for name in sorted(COMMANDS)]
    for name, cmd in commands:
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            spelling = " / ".join(f"`{o}`" for o in p.opts + p.secondary_opts)
            key = (p.opts[0].lstrip("-"), spelling, _default(p), _help(p))
            rows.setdefault(key, []).append(name)
    lines = ["| option | commands | default | what |", "|---|---|---|---|"]
    for (_, spelling, default, text), names in sorted(rows.items()):
        lines.append(f"| {spelling} | {', '.join(names)} | {default} | {text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
