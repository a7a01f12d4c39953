"""Where commands write, and the one rule that keeps them from destroying what the user has.

The rule (every command that writes follows it):

- a target that does not exist, or an empty folder, is written;
- an existing non-empty target is refused unless `--overwrite` is given;
- with `--overwrite`, a *file* is replaced atomically (temporary file + rename); a
  *folder* is replaced only when it is recognisably normtweak's own output: it holds
  the marker file `normtweak-output.json` (written into every output folder) and no
  file that the marker does not list. A folder holding anything else (say `models/`
  with other models in it) is refused even with `--overwrite`: nothing normtweak did
  not write is ever deleted. Choose a new folder, e.g. `models/NAME`, instead.
- a folder is always built under a temporary name beside the target and renamed into
  place at the end, so an interrupted command leaves either the old output or the new
  one, never half of each.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from normtweak.common.files import (
    disk_full_as,
    plain_modes,
    replace_folder,
    staging_folder,
    write_atomic,
)

__all__ = ["MARKER", "TargetExistsError", "check_target", "foreign_files", "publish_folder",
           "staging_folder", "user_cache_dir", "write_file", "write_folder",
           "write_library_folder", "write_marker"]

MARKER = "normtweak-output.json"


class TargetExistsError(FileExistsError):
    """An output target exists and may not be replaced; the message says the ways out."""


def _listing(folder: Path, limit: int = 6) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def foreign_files(folder: Path) -> list[str] | None:
    """Files in `folder` normtweak did not write; None when the folder has no marker."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        ours = set(json.loads(marker.read_text(encoding="utf-8")).get("files", []))
    except (ValueError, OSError):
        return None
    return sorted(_files(folder) - ours - {MARKER})


def _older_normtweak_model(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (config.get("quantization_config") or {}).get("quant_method") == "normtweak"


def check_target(path: str | os.PathLike, overwrite: bool, flag: str = "--save-dir",
                 option: str = "--overwrite") -> Path:
    """Raise TargetExistsError unless writing `path` is allowed by the rule above.

    flag / option: how the message names the target and the way to allow replacing it
    (the CLI's "--save-dir" / "--overwrite"; the Python API's "path" / "overwrite=True")."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return path
    if path.is_dir() and not any(path.iterdir()):
        return path
    if path.is_dir():
        foreign = foreign_files(path)
        if not overwrite:
            what = "a normtweak output" if foreign is not None else "not empty"
            raise TargetExistsError(
                f"{flag} {path} exists and is {what} ({_listing(path)}); pass {option} to "
                f"replace it, or choose a new path" + ("" if foreign is not None else
                                                       f" such as {path / 'NAME'}"))
        if foreign is None and _older_normtweak_model(path):
            raise TargetExistsError(
                f"{flag} {path} holds a model saved by an earlier normtweak, without the "
                f"{MARKER} that lets {option} replace it; delete it yourself if you mean "
                f"to, or choose a new path")
        if foreign is None:
            raise TargetExistsError(
                f"{flag} {path} holds files normtweak did not write ({_listing(path)}); "
                f"{option} only replaces normtweak's own output folders, so nothing is "
                f"deleted: choose a new folder such as {path / 'NAME'}")
        if foreign:
            raise TargetExistsError(
                f"{flag} {path} is a normtweak output but also holds other files "
                f"({', '.join(foreign[:6])}); move them out first, or choose a new path")
        return path
    if not overwrite:
        raise TargetExistsError(f"{flag} {path} exists; pass {option} to replace it, or "
                                f"choose a new path")
    return path


def write_marker(folder: Path, command: str, **info) -> None:
    """Mark `folder` as normtweak's output, listing every file in it (before the marker)."""
    payload = {"written_by": "normtweak", "command": command,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info,
               "files": sorted(_files(folder))}
    (folder / MARKER).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def publish_folder(staged: Path, path: str | os.PathLike, overwrite: bool, command: str,
                   flag: str = "--save-dir", option: str = "--overwrite", **info) -> Path:
    """Mark `staged` and rename it to `path` (replacing an old output only if allowed)."""
    path = Path(path)
    check_target(path, overwrite, flag, option)  # again: something may have appeared meanwhile
    with disk_full_as(path):
        write_marker(staged, command, **info)
    plain_modes(staged)  # whatever the saver made, the user's umask decides
    return replace_folder(staged, path)


def write_folder(path: str | os.PathLike, write: Callable[[Path], object], *, overwrite: bool,
                 command: str, flag: str = "--save-dir", option: str = "--overwrite",
                 **info) -> Path:
    """Check the target, call write(new_folder) (new_folder does not exist yet), publish it.

    `write` may be any saver that creates a folder at the path it is given (e.g.
    `lambda p: save_quantized(model, tok, p, quant=spec)`).
    """
    path = check_target(path, overwrite, flag, option)
    with disk_full_as(path):  # name the user's target, not the staging folder inside
        stage = staging_folder(path)
        try:
            inner = stage / "out"
            write(inner)
            if not inner.is_dir():
                raise OSError(f"nothing was written for {path}")
            return publish_folder(inner, path, overwrite, command, flag, option, **info)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def write_file(path: str | os.PathLike, data: bytes | str, *, overwrite: bool,
               flag: str = "--output", option: str = "--overwrite") -> Path:
    """Write a file atomically (temporary file + rename), refusing to replace one unasked."""
    return write_atomic(check_target(path, overwrite, flag, option), data)


def write_library_folder(path: str | os.PathLike, write: Callable[[Path], object],
                         overwrite: bool, what: str) -> Path:
    """write_folder for the Python API: the same rule, with messages in Python's terms.

    A folder a saver wrote is marked, so overwrite=True may later replace it (and only it)."""
    return write_folder(path, write, overwrite=overwrite, command=f"normtweak.{what} (Python)",
                        flag="path", option="overwrite=True")


def user_cache_dir() -> Path:
    """normtweak's cache: $NORMTWEAK_CACHE, else $XDG_CACHE_HOME/normtweak, else ~/.cache/normtweak.

    Follows the Hugging Face convention (HF_HOME / XDG_CACHE_HOME / ~/.cache/huggingface).
    """
    env = os.environ.get("NORMTWEAK_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "normtweak"
