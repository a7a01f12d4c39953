"""What a kill -9 leaves, and modes: staging of a killed save (a model folder, a calibration
set) is removed by the next write into the same folder, which says so; a replace killed
between its two renames never leaves nothing at the path; outputs follow the umask."""

import os
import shutil
import stat

import pytest
from click.testing import CliRunner
from faultkit import CORPUS, Child, llama_folder, staging_leftovers, tweak_args

from normtweak.cli import main
from normtweak.common import files


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("leftovers")
    llama_folder(root / "llama", tokenizer)
    (root / "corpus.txt").write_text(CORPUS)
    res = CliRunner().invoke(main, tweak_args(root / "llama", root / "corpus.txt", root / "saved"))
    assert res.exit_code == 0, res.output
    return root


def _tweak(work, out, *extra):
    return tweak_args(work / "llama", work / "corpus.txt", out, *extra)


# --- staging of killed writers ------------------------------------------------------------


@pytest.mark.slow  # a child interpreter imports torch + transformers
def test_a_save_killed_midway_is_cleaned_up_by_the_next_write(work, tmp_path):
    models = tmp_path / "models"
    child = Child(tmp_path, "save_file", _tweak(work, models / "a"))
    child.wait_for_hook()  # the weights are written into the staging folder: kill -9 now
    child.kill()
    left = staging_leftovers(models, "a")
    assert len(left) == 1 and f".tmp-{child.pid}-" in left[0], left
    assert any((models / left[0]).rglob("model.safetensors"))  # a whole model, hidden
    res = CliRunner().invoke(main, _tweak(work, models / "b"))
    assert res.exit_code == 0, res.output
    assert f"removed 1 leftover(s) of interrupted writes in {models}" in res.output
    assert left[0] in res.output
    assert sorted(p.name for p in models.iterdir()) == ["b"]


@pytest.mark.slow
def test_a_calibration_set_killed_midway_is_cleaned_up_by_the_next_write(work, tmp_path):
    cache = tmp_path / "calibration"
    args = ["generate-data", "--model", str(work / "llama"), "--from-text",
            str(work / "corpus.txt"), "--num-samples", "4", "--seq-len", "32", "--save-dir",
            str(cache)]
    child = Child(tmp_path, "calibration", args)
    child.wait_for_hook()
    child.kill()
    left = [p.name for p in cache.iterdir()]
    assert len(left) == 1 and left[0].startswith(".") and f".tmp-{child.pid}-" in left[0], left
    res = CliRunner().invoke(main, [*args, "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert f"removed 1 leftover(s) of interrupted writes in {cache}" in res.output
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_live_writers_staging_is_left_alone(tmp_path):
    mine = files.staging_folder(tmp_path / "out")  # this process: alive
    other_host = tmp_path / f".x.tmp-1-{files.host_name()}zz-0123abcd"
    other_host.mkdir()
    users = tmp_path / ".x.tmp-notes"
    users.mkdir()
    assert files.clean_leftovers(tmp_path) == []
    assert mine.is_dir() and other_host.is_dir() and users.is_dir()


# --- a replacement killed between its two renames -------------------------------------------


@pytest.mark.slow
def test_a_replace_killed_between_the_renames_is_put_back(work, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, _tweak(work, out)).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    child = Child(tmp_path, "swap", _tweak(work, out, "--overwrite", "--nbits", "4"))
    child.wait_for_hook()  # where the OS has no one-step swap: old moved aside, new not in yet
    child.kill()
    assert not out.exists()
    assert len(staging_leftovers(tmp_path, "out")) == 2  # .out.old-PID-..., .out.tmp-PID-...
    res = CliRunner().invoke(main, _tweak(work, tmp_path / "other"))  # the next run here
    assert res.exit_code == 0, res.output
    assert f"put back .out.old-{child.pid}-" in res.output and "killed between two renames" in res.output
    assert (out / "model.safetensors").read_bytes() == before
    assert staging_leftovers(tmp_path, "out") == []


def test_loading_puts_back_a_folder_a_killed_replace_left_aside(work, tmp_path):
    from normtweak.io import load_quantized

    out = shutil.copytree(work / "saved", tmp_path / "out")
    aside = out.with_name(f".out.old-{2**22 + 12345}-{files.host_name()}-0123abcd")  # no such pid
    out.rename(aside)
    load_quantized(out)
    assert out.is_dir() and not aside.exists()


def test_replace_folder_swaps_in_one_step_on_linux(tmp_path, monkeypatch):
    if files.exchange(tmp_path, tmp_path) is False:
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    old, staged = tmp_path / "out", files.staging_folder(tmp_path / "out")
    old.mkdir()
    (old / "a").write_text("old")
    (staged / "a").write_text("new")

    def no_rename(src, dst):
        raise AssertionError(f"os.replace({src}, {dst}): the path would be empty in between")

    monkeypatch.setattr(os, "replace", no_rename)
    files.replace_folder(staged, old)
    assert (old / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, pytest.param(0o027, marks=pytest.mark.slow)])
def test_outputs_follow_the_umask(work, tmp_path, mask):
    old = os.umask(mask)
    try:
        out, calib = tmp_path / "out", tmp_path / "calib.safetensors"
        assert CliRunner().invoke(main, _tweak(work, out)).exit_code == 0
        res = CliRunner().invoke(main, ["generate-data", "--model", str(work / "llama"),
                                        "--from-text", str(work / "corpus.txt"), "--num-samples",
                                        "4", "--seq-len", "32", "--output", str(calib)])
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir(), calib]}
    assert modes == {name: (0o777 if name == "out" else 0o666) & ~mask for name in modes}
