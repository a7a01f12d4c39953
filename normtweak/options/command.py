"""The click command class the commands use, and the command line as typed (resume hints)."""

from __future__ import annotations

import re
import shlex

import click

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class Command(click.Command):
    """A click command that keeps the arguments as typed (for the resume hint), lets
    `list_options` take space-separated numbers (`--grid-search-lr 0 1e-4` = `0,1e-4`) and
    `pair_options` several LABEL=VALUE words (`--compare a=x b=y` = `--compare a=x --compare
    b=y`)."""

    list_options: tuple[str, ...] = ()
    pair_options: tuple[str, ...] = ()

    def __init__(self, *args, list_options=(), pair_options=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.list_options = tuple(list_options)
        self.pair_options = tuple(pair_options)

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
            if args[i] in self.pair_options and i + 1 < len(args):
                option, i = args[i], i + 1
                joined.append(args[i])
                i += 1
                while i < len(args) and "=" in args[i] and not args[i].startswith("-"):
                    joined += [option, args[i]]
                    i += 1
                continue
            i += 1
        return super().parse_args(ctx, joined)


def command_line(ctx: click.Context, add: tuple[str, ...] = ()) -> str:
    """The command as the user typed it (`normtweak tweak ...`), plus `add` if missing."""
    argv = list(ctx.meta.get("normtweak.argv", []))
    argv += [a for a in add if a not in argv]
    return shlex.join(["normtweak", ctx.info_name or "", *argv])
