"""An exclusive lock on a folder, for the life of a run: `normtweak.lock` in it.

The lock file holds its owner's pid, host and start time, and is flocked while held, so
the kernel drops the lock of a killed process; a second run is refused with a message
naming the owner. The lock file of a run that is gone (killed on this host) is taken over,
and a line on stderr says so. A lock whose owner ran on another host is never taken over:
the message says which file to delete once that run is known to be gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from normtweak.common.files import host_name, pid_alive

LOCK_NAME = "normtweak.lock"

_HELD: dict[str, FolderLock] = {}  # lock file -> this process's holder


class FolderLock:
    """A held lock; release() unlinks the lock file and drops the flock (once)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if _HELD.get(str(self.path)) is not self:
            return  # handed on to a later run of this process, or released already
        del _HELD[str(self.path)]
        self.path.unlink(missing_ok=True)  # before the flock goes: see take_lock's inode check
        os.close(self.fd)


def _owner(fd: int) -> dict:
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (ValueError, OSError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _open_locked(path: Path, refuse) -> tuple[int, bool]:
    """(fd, flocked) of the lock file now at `path`; refuse(owner) raises when it is held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flocked = True
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            refuse(owner)
        except OSError:  # a file system without flock: the pid alone decides
            flocked = False
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd, flocked
        except FileNotFoundError:
            pass
        os.close(fd)  # its owner released (unlinked) it meanwhile: lock the new one


def take_lock(folder: str | os.PathLike, flag: str = "folder") -> FolderLock:
    """Lock `folder` for this process; ValueError naming the owner when another run holds it.

    flag: how messages name the folder (e.g. "--checkpoint-dir"). The same process may take
    a lock it holds again (a failed run's objects may still be referenced by a traceback):
    the later holder gets it."""
    folder = Path(folder)
    path = (folder / LOCK_NAME).absolute()
    held = _HELD.get(str(path))
    if held is not None:
        _HELD[str(path)] = FolderLock(path, held.fd)
        return _HELD[str(path)]

    def refuse(owner: dict) -> None:
        raise ValueError(
            f"{flag} {folder} is in use by another normtweak run (pid {owner.get('pid', '?')} "
            f"on {owner.get('host', '?')}, since {owner.get('since', '?')}); wait for it to "
            f"end, or use another folder (if that run is gone, delete {path})")

    fd, flocked = _open_locked(path, refuse)
    owner = _owner(fd)
    pid = owner.get("pid") if isinstance(owner.get("pid"), int) else None
    if pid not in (None, os.getpid()) or owner.get("host", host_name()) != host_name():
        if owner.get("host") != host_name() or not (flocked or not pid_alive(pid or 0)):
            os.close(fd)
            refuse(owner)
        print(f"normtweak: taking over {path}: the run that held it (pid {pid} on "
              f"{owner.get('host')}) is gone", file=sys.stderr)
    me = json.dumps({"pid": os.getpid(), "host": host_name(),
                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, me, 0)
    os.fsync(fd)
    _HELD[str(path)] = FolderLock(path, fd)
    return _HELD[str(path)]
