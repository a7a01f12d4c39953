"""The write rule: refuse non-empty targets unless --overwrite; replace only normtweak's own
marked output, atomically; never touch other files."""

import json

import pytest

from normtweak.outputs import (
    MARKER,
    TargetExistsError,
    check_target,
    user_cache_dir,
    write_file,
    write_folder,
)


def _write_model(folder, text="new"):
    folder.mkdir()
    (folder / "config.json").write_text(text)
    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_text(text)


def test_new_and_empty_targets_are_written(tmp_path):
    out = write_folder(tmp_path / "a", _write_model, overwrite=False, command="test")
    assert (out / "config.json").read_text() == "new"
    marker = json.loads((out / MARKER).read_text())
    assert sorted(marker["files"]) == ["config.json", "sub/w.bin"]
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "empty", _write_model, overwrite=False, command="test")
    assert (tmp_path / "empty" / "config.json").is_file()


def test_a_folder_with_other_files_is_refused_even_with_overwrite(tmp_path):
    models = tmp_path / "models"
    (models / "smollm2-135m").mkdir(parents=True)
    (models / "smollm2-135m" / "model.safetensors").write_bytes(b"precious")
    for overwrite in (False, True):
        with pytest.raises(TargetExistsError, match="models/NAME|choose a new"):
            write_folder(models, _write_model, overwrite=overwrite, command="test")
    assert (models / "smollm2-135m" / "model.safetensors").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no staging left behind


def test_our_output_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "q"
    write_folder(out, lambda p: _write_model(p, "old"), overwrite=False, command="test")
    (tmp_path / "neighbour.txt").write_text("keep")
    with pytest.raises(TargetExistsError, match="--overwrite"):
        write_folder(out, _write_model, overwrite=False, command="test")
    assert (out / "config.json").read_text() == "old"
    write_folder(out, _write_model, overwrite=True, command="test")
    assert (out / "config.json").read_text() == "new"
    assert (tmp_path / "neighbour.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbour.txt", "q"]


def test_a_file_the_user_added_to_our_output_blocks_overwrite(tmp_path):
    out = tmp_path / "q"
    write_folder(out, _write_model, overwrite=False, command="test")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TargetExistsError, match="notes.txt"):
        check_target(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_failed_write_keeps_the_old_output(tmp_path):
    out = tmp_path / "q"
    write_folder(out, lambda p: _write_model(p, "old"), overwrite=False, command="test")

    def crash(folder):
        _write_model(folder)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(out, crash, overwrite=True, command="test")
    assert (out / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_files_are_refused_then_replaced_atomically(tmp_path):
    path = tmp_path / "r.json"
    write_file(path, "1", overwrite=False)
    with pytest.raises(TargetExistsError, match="--overwrite"):
        write_file(path, "2", overwrite=False)
    write_file(path, "2", overwrite=True)
    assert path.read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_user_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMTWEAK_CACHE", str(tmp_path / "c"))
    assert user_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NORMTWEAK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert user_cache_dir() == tmp_path / "x" / "normtweak"


def test_a_model_saved_before_the_marker_existed_is_named_not_deleted(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "normtweak"}}))
    with pytest.raises(TargetExistsError, match="earlier normtweak"):
        check_target(old, overwrite=True)
    assert (old / "config.json").is_file()
