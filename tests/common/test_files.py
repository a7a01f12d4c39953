"""Atomic writes (normtweak.common.files): a reader sees the old content or the new, a
failed write leaves the target untouched and no temporary behind, data reaches the disk."""

import os

import pytest

from normtweak.common.files import atomic_file, atomic_folder, replace_folder, write_atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_atomic_replaces_and_fsyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    target = tmp_path / "sub" / "out.json"
    assert write_atomic(target, "old") == target
    write_atomic(target, b"new \xe2\x9c\x93")
    assert target.read_text(encoding="utf-8") == "new \u2713"
    assert len(synced) == 2  # once per write, before the rename
    assert _leftovers(target.parent) == []


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_file(target, suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".png") and tmp.exists()
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_folder_replaces_a_folder_or_leaves_it_alone(tmp_path):
    target = tmp_path / "model"

    def write(text):
        def go(folder):
            (folder / "config.json").write_text(text)
        return go

    assert atomic_folder(target, write("one")) == target
    atomic_folder(target, write("two"))
    assert (target / "config.json").read_text() == "two"

    def fail(folder):
        (folder / "config.json").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_folder(target, fail)
    assert (target / "config.json").read_text() == "two"
    assert _leftovers(tmp_path) == []


def test_disk_full_says_nothing_was_written(tmp_path):
    import errno

    def full(folder):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="disk full while saving to .*nothing was written"):
        atomic_folder(tmp_path / "model", full)
    assert list(tmp_path.iterdir()) == []


def test_replace_folder_puts_the_old_folder_back_when_the_rename_fails(tmp_path, monkeypatch):
    """Where the OS cannot swap two folders in one step (exchange() is False)."""
    from normtweak.common import files

    monkeypatch.setattr(files, "exchange", lambda a, b: False)
    old, staged = tmp_path / "out", tmp_path / ".out.tmp-1"
    old.mkdir()
    (old / "a").write_text("old")
    staged.mkdir()
    real = os.replace

    def refuse_staged(src, dst):
        if str(src) == str(staged):
            raise PermissionError("cannot rename")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_staged)
    with pytest.raises(PermissionError):
        replace_folder(staged, old)
    assert (old / "a").read_text() == "old"
