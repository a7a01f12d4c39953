"""Atomic writes: the one implementation every module uses.

A file is written to a temporary file beside its target, flushed to disk (fsync) and
renamed onto the target with `os.replace`; a folder is built under a temporary name
beside its target and renamed into place. A reader sees the old content or the new,
never half of either, and an error (or Ctrl-C) leaves no temporary behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; then fsync it and
    rename it onto `path`. On any error the temporary file is deleted and `path` is untouched.

    suffix: the temporary name's ending (writers that pick a format by it need e.g. ".png").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes (or str, as UTF-8) to `path` atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_folder(path: str | os.PathLike) -> Path:
    """A new empty folder beside `path` (same file system, so a rename moves it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))


def replace_folder(staged: Path, path: str | os.PathLike) -> Path:
    """Rename `staged` to `path`. An existing `path` is moved aside first, put back if the
    rename fails, and deleted once the new folder is in place."""
    path = Path(path)
    if not path.exists():
        os.replace(staged, path)
        return path
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    try:
        os.replace(staged, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def atomic_folder(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call write(tmp_folder) on a new folder beside `path`, then move it to `path`
    (replacing an existing one); on error the temporary folder is removed."""
    path = Path(path)
    tmp = staging_folder(path)
    try:
        write(tmp)
        return replace_folder(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while saving to {path}; nothing was written") from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
