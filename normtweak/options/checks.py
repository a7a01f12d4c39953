"""Checks every command that writes makes before anything slow starts, and the float-model
loading they share."""

from __future__ import annotations

from pathlib import Path

import click

from normtweak.options.specs import check_writable


def check_checkpoints(checkpoint_dir, resume, overwrite) -> None:
    """Refuse early (before loading anything) to drop finished checkpoints unasked."""
    from normtweak.tweak.checkpoint import describe_blocks, finished_blocks

    if resume and checkpoint_dir is None:
        raise ValueError("--resume needs --checkpoint-dir (the folder of the interrupted run)")
    if checkpoint_dir is None:
        return
    done = finished_blocks(checkpoint_dir)
    if resume:
        if done:
            click.echo(f"{describe_blocks(done)} found in {checkpoint_dir}: resuming from "
                       f"block {len(done)}")
        else:
            click.echo(f"no checkpoints in {checkpoint_dir} yet: starting from block 0")
    elif done and not overwrite:
        raise ValueError(f"--checkpoint-dir {checkpoint_dir} already holds "
                         f"{describe_blocks(done)}; pass --resume to continue that run, or "
                         f"--overwrite to discard them and start over")


def check_outputs(options: dict, folders: dict[str, str | None]) -> None:
    """The folders a command will write: writable, distinct, and not ours to replace unasked.

    folders: option spelling -> path (None: not asked for)."""
    from normtweak.outputs import check_target

    asked = {flag: Path(p).resolve() for flag, p in folders.items() if p}
    seen: dict[Path, str] = {}
    for flag, path in asked.items():
        if path in seen:
            raise ValueError(f"{flag} and {seen[path]} name the same folder {path}: give each "
                             f"its own")
        seen[path] = flag
        check_writable(path, flag)
        if flag != "--checkpoint-dir":
            check_target(path, options["overwrite"], flag)


def load_float(model_ref: str, lazy: bool = False, allow_missing: bool = False):
    """(model, tokenizer, block loader or None)."""
    from normtweak.assets import resolve_model
    from normtweak.loading.float import load_model

    if not lazy:
        kwargs = {"allow_missing": True} if allow_missing else {}
        return (*load_model(model_ref, **kwargs), None)
    from normtweak.tweak.offload import load_lazily

    model, tok, loader = load_lazily(resolve_model(model_ref))
    if tok is None:
        raise FileNotFoundError(f"{model_ref}: no tokenizer files in the model folder")
    return model, tok, loader
