"""Atomic writes: the one implementation every module uses.

A file is written to a temporary file beside its target, flushed to disk (fsync) and
renamed onto the target with `os.replace`; a folder is built under a temporary name
beside its target and swapped into place. A reader sees the old content or the new,
never half of either, and an error (or Ctrl-C) leaves no temporary behind.

What a kill -9 leaves: temporaries are named `.NAME.tmp-PID-HOST-RANDOM` (and an old
folder moved aside `.NAME.old-PID-HOST-RANDOM`), so the next write into the same folder
knows whose they are: those of processes that no longer run on this host are removed (an
old folder whose target is missing is put back), and a line on stderr says so.

Permissions follow the user's umask, as a plain mkdir/open would (whatever modes a writer
such as safetensors gave its files). A full disk, however a
writer reports it (OSError ENOSPC, safetensors' SafetensorError, tokenizers' bare
Exception, numpy's short write), becomes OSError(ENOSPC, "disk full while saving to X;
nothing was written").
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_LEFTOVER = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<host>\w+)-"
                       r"[0-9a-f]{8}(?:\.\w+)?$")
_FULL_TEXT = re.compile(r"No space left on device|os error 28\b|Disk quota exceeded|"
                        r"os error 122\b|\d+ requested and \d+ written")


# --- whose is it: pids, hosts, staging names ---------------------------------------------


def host_name() -> str:
    """This host's name as it appears in staging names and lock files."""
    return _HOST


def pid_alive(pid: int) -> bool:
    """True if process `pid` runs on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def staging_name(path: Path, kind: str = "tmp", suffix: str = "") -> Path:
    """`.NAME.KIND-PID-HOST-RANDOM[suffix]` beside `path`: unique, and says whose it is."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{_HOST}-"
                          f"{secrets.token_hex(4)}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove what writers killed on this host left in `folder`; put back an old folder
    whose replacement was cut short. Says so on stderr; returns the names handled."""
    folder = Path(folder)
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return []
    removed, restored = [], []
    for name in entries:
        m = _LEFTOVER.match(name)
        if not m or m["host"] != _HOST or pid_alive(int(m["pid"])):
            continue
        target = folder / m["target"]
        if m["kind"] == "old" and not os.path.lexists(target):
            try:
                os.replace(folder / name, target)
                restored.append(name)
            except OSError:
                pass
            continue
        _remove(folder / name)
        removed.append(name)
    if restored:
        print(f"normtweak: put back {', '.join(restored)} in {folder} as "
              f"{', '.join(_LEFTOVER.match(n)['target'] for n in restored)}: a process that "
              f"was replacing it was killed between two renames", file=sys.stderr)
    if removed:
        print(f"normtweak: removed {len(removed)} leftover(s) of interrupted writes in "
              f"{folder} (their processes are gone): {', '.join(removed)}", file=sys.stderr)
    return restored + removed


def recover(path: str | os.PathLike) -> Path:
    """`path`, put back first if a killed replacement left it moved aside."""
    path = Path(path)
    if not os.path.lexists(path):
        clean_leftovers(path.parent)
    return path


# --- permissions -------------------------------------------------------------------------


def umask() -> int:
    """The process's umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_modes(path: Path) -> None:
    """Give `path` (and, for a folder, all in it) the modes a plain open/mkdir gives under the
    user's umask: writers such as safetensors create 0600 files, mkdtemp 0700 folders."""
    mask = umask()
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                entry = os.path.join(root, name)
                if not os.path.islink(entry):
                    os.chmod(entry, (0o777 if name in dirs else 0o666) & ~mask)
        os.chmod(path, 0o777 & ~mask)
    elif path.is_file() and not path.is_symlink():
        os.chmod(path, 0o666 & ~mask)


# --- disk full ---------------------------------------------------------------------------


def is_disk_full(err: BaseException) -> bool:
    """True when `err` (or what caused it) says the disk or quota is full."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(err, Exception) and _FULL_TEXT.search(str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(path: str | os.PathLike) -> OSError:
    return OSError(errno.ENOSPC, f"disk full while saving to {path}; nothing was written")


@contextmanager
def disk_full_as(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk, however reported, into disk_full_error(path)."""
    try:
        yield
    except Exception as err:
        if is_disk_full(err):
            raise disk_full_error(path) from err
        raise


# --- files -------------------------------------------------------------------------------


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; then fsync it and
    rename it onto `path`. On any error the temporary file is deleted and `path` is untouched.

    suffix: the temporary name's ending (writers that pick a format by it need e.g. ".png").
    """
    path = Path(path)
    with disk_full_as(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(path.parent)
        tmp = staging_name(path, "tmp", suffix)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies
        try:
            yield tmp
            plain_modes(tmp)
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


# --- folders -----------------------------------------------------------------------------


def staging_folder(path: str | os.PathLike) -> Path:
    """A new empty folder beside `path` (same file system, so a rename moves it); stale
    staging of killed writers in that folder is removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path.parent)
    staged = staging_name(path)
    os.mkdir(staged)  # mode 0o777 less the umask, as a plain mkdir
    return staged


@functools.lru_cache(maxsize=1)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where
    the OS or the file system has no such call."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(staged: Path, path: str | os.PathLike) -> Path:
    """Move `staged` to `path`, atomically swapping out an existing `path` where the OS can
    (then the old one is deleted). Elsewhere the old one is moved aside first, put back if
    the rename fails, and deleted once the new folder is in place; a kill between the two
    renames is repaired by the next write into that folder (clean_leftovers)."""
    path = Path(path)
    if not os.path.lexists(path):
        os.replace(staged, path)
        return path
    if exchange(staged, path):
        _remove(Path(staged))  # it now holds the old folder
        return path
    old = staging_name(path, "old")
    os.replace(path, old)
    try:
        os.replace(staged, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)
    return path


def atomic_folder(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call write(tmp_folder) on a new folder beside `path`, then move it to `path`
    (replacing an existing one); on error the temporary folder is removed."""
    path = Path(path)
    with disk_full_as(path):
        tmp = staging_folder(path)
        try:
            write(tmp)
            plain_modes(tmp)
            return replace_folder(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
