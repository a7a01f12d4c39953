"""The `normtweak` command line: thin click commands that parse, call the API, print.

Commands live beside the code they drive (`normtweak/<area>/commands.py`) and are
imported lazily, so `normtweak --help` stays fast. Register a command with one line
in COMMANDS: name -> "module:function".
"""

from __future__ import annotations

import importlib

import click

COMMANDS: dict[str, str] = {
    "generate-data": "normtweak.calib.commands:generate_data",
    "eval": "normtweak.evaluate.commands:eval_cmd",
    "quantize": "normtweak.quant.commands:quantize_cmd",
    "tweak": "normtweak.tweak.commands:tweak_cmd",
    "run": "normtweak.tweak.commands:run_cmd",
    "bench-norms": "normtweak.norms.commands:bench_norms",
    "precision": "normtweak.experiments.commands:precision_cmd",
    "export": "normtweak.io.commands:export_cmd",
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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="normtweak")
def main() -> None:
    """normtweak: low-bit post-training quantization with norm tweaking."""
    from normtweak.dist import init_from_env

    init_from_env()  # under torchrun: join the process group (no-op otherwise)


if __name__ == "__main__":
    main()
