"""--checkpoint-dir under attack: another run in the same folder (a live one is refused, a
killed one's lock is taken over), the user's own files in it, block files tampered with or
truncated, and a resume after the model's weights changed at the same path."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from faultkit import CORPUS, Child, llama_folder, one_error, tweak_args

from normtweak.cli import main

BLOCKS = 3


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("ckptfaults")
    llama_folder(root / "llama", tokenizer, blocks=BLOCKS)
    (root / "corpus.txt").write_text(CORPUS)
    return root


@pytest.fixture(scope="module")
def finished(work):
    """The checkpoint folder of a finished run (copy it before changing it)."""
    ckpt = work / "finished"
    assert _invoke(_args(work / "llama", work, work / "finished_out", ckpt)).exit_code == 0
    return ckpt


def _args(model, work, out, ckpt, *extra):
    return tweak_args(model, work / "corpus.txt", out, "--checkpoint-dir", str(ckpt), *extra)


def _invoke(args):
    return CliRunner().invoke(main, args)


# --- the user's own files ---------------------------------------------------------------


@pytest.mark.parametrize("files", [{"run.json": '{"my": 1}\n'}, {"notes.txt": "mine"},
                                   {"block_0000.safetensors": "not ours"}])
def test_a_folder_holding_the_users_files_is_refused(work, tmp_path, files):
    ckpt = tmp_path / "p"
    ckpt.mkdir()
    for name, text in files.items():
        (ckpt / name).write_text(text)
    # (without a flag, a block file alone is refused earlier, as checkpoints needing --resume)
    for extra in ([], ["--overwrite"], ["--resume"])[1 if "block_0000.safetensors" in files else 0:]:
        res = _invoke(_args(work / "llama", work, tmp_path / "out", ckpt, *extra))
        one_error(res, f"--checkpoint-dir {ckpt} holds files normtweak did not write",
                  *files, str(ckpt / "NAME"))
    assert {p.name: p.read_text() for p in ckpt.iterdir()} == files
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a second tweak run
def test_an_earlier_runs_folder_is_ours(work, finished, tmp_path):
    ckpt = shutil.copytree(finished, tmp_path / "p")
    record = json.loads((ckpt / "run.json").read_text())
    assert record["written_by"] == "normtweak checkpoints"
    assert sorted(record["block_sha256"]) == [f"block_{i:04d}.safetensors" for i in range(BLOCKS)]
    res = _invoke(_args(work / "llama", work, tmp_path / "b", ckpt, "--overwrite"))
    assert res.exit_code == 0, res.output


# --- block files tampered with or truncated ---------------------------------------------


@pytest.mark.parametrize("damage", ["tampered", "truncated", "emptied"])
def test_a_damaged_block_checkpoint_is_refused_on_resume_naming_it(work, finished, tmp_path,
                                                                  damage):
    ckpt = shutil.copytree(finished, tmp_path / "p")
    block = ckpt / "block_0001.safetensors"
    data = bytearray(block.read_bytes())
    if damage == "tampered":
        data[len(data) - 9] ^= 0x01  # one bit of tensor data: still a valid safetensors file
    data = {"tampered": data, "truncated": data[: len(data) // 2], "emptied": b""}[damage]
    block.write_bytes(bytes(data))
    res = _invoke(_args(work / "llama", work, tmp_path / "b", ckpt, "--resume"))
    one_error(res, str(block), "does not match the sha256 recorded when it was written")
    assert not (tmp_path / "b").exists()


# --- a killed run: its lock is taken over; changed weights are refused -------------------


@pytest.mark.slow  # a child interpreter imports torch + transformers
def test_a_live_run_holds_the_folder_and_a_second_is_refused(work, tmp_path):
    ckpt = tmp_path / "p"
    first = Child(tmp_path, "block 0", _args(work / "llama", work, tmp_path / "a", ckpt))
    first.wait_for_hook()
    block0 = (ckpt / "block_0000.safetensors").read_bytes()
    for extra in (["--overwrite"], ["--resume"]):
        res = _invoke(_args(work / "llama", work, tmp_path / "b", ckpt, *extra))
        one_error(res, f"--checkpoint-dir {ckpt} is in use by another normtweak run",
                  f"pid {first.pid} on ")
    assert (ckpt / "block_0000.safetensors").read_bytes() == block0
    rc, output = first.go()
    assert rc == 0, output[-3000:]
    assert not (ckpt / "normtweak.lock").exists()  # released at the end
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_killed_runs_lock_is_taken_over_and_said_so(work, tmp_path):
    ckpt, out = tmp_path / "p", tmp_path / "out"
    first = Child(tmp_path, "block 0", _args(work / "llama", work, out, ckpt))
    first.wait_for_hook()
    first.kill()
    assert json.loads((ckpt / "normtweak.lock").read_text())["pid"] == first.pid
    res = _invoke(_args(work / "llama", work, out, ckpt, "--resume"))
    assert res.exit_code == 0, res.output
    assert f"taking over {ckpt / 'normtweak.lock'}" in res.output
    assert f"(pid {first.pid} on " in res.output and "is gone" in res.output
    assert "restored from checkpoint" in res.output


@pytest.mark.slow
def test_resume_refuses_other_weights_at_the_same_model_path(work, tmp_path, tokenizer):
    model = shutil.copytree(work / "llama", tmp_path / "llama")
    ckpt, out = tmp_path / "p", tmp_path / "out"
    first = Child(tmp_path, "block 0", _args(model, work, out, ckpt))
    first.wait_for_hook()
    first.kill()
    llama_folder(model, tokenizer, blocks=BLOCKS, seed=1)  # same path, same config, new weights
    res = _invoke(_args(model, work, out, ckpt, "--resume"))
    one_error(res, f"cannot resume from {ckpt}",
              "the model's weights differ from the interrupted run's", "--overwrite")
    assert not out.exists()
    assert (ckpt / "block_0000.safetensors").is_file()


def test_weights_fingerprint_sees_any_change_and_skips_meta(make_tiny):
    from normtweak.tweak.checkpoint import weights_fingerprint

    model = make_tiny("llama")
    same = make_tiny("llama")
    assert weights_fingerprint(model) == weights_fingerprint(same)
    with torch.no_grad():
        same.model.layers[1].mlp.up_proj.weight[3, 7] += 1e-6
    assert weights_fingerprint(model) != weights_fingerprint(same)
    model.model.layers[1].to("meta")  # a block not loaded yet (lazy loading): skipped
    same.model.layers[1].to("meta")
    assert weights_fingerprint(model) == weights_fingerprint(same)


def test_the_lock_goes_with_the_run(tmp_path):
    from normtweak.tweak.checkpoint import CheckpointDir

    info = {"num_blocks": 1, "normtweak_version": "x", "calibration_sha256": "y"}
    with CheckpointDir(tmp_path / "p", info) as ckpt:
        assert ckpt.start(resume=False) == 0
        assert (tmp_path / "p" / "normtweak.lock").is_file()
    assert not (tmp_path / "p" / "normtweak.lock").exists()


def test_a_lazily_loaded_model_is_fingerprinted_on_disk(tmp_path, tokenizer):
    """With --lazy-load the blocks are still on disk when the run is recorded: one weight of
    the last block changed in the file changes the fingerprint a resume compares."""
    from safetensors.torch import load_file, save_file

    from normtweak.tweak.offload import load_lazily

    llama_folder(tmp_path / "m", tokenizer, blocks=BLOCKS)
    first = load_lazily(tmp_path / "m")[2].fingerprint()
    assert load_lazily(tmp_path / "m")[2].fingerprint() == first
    (path,) = (tmp_path / "m").glob("*.safetensors")
    tensors = load_file(str(path))
    name = next(n for n in tensors if f"layers.{BLOCKS - 1}.mlp.up_proj" in n)
    tensors[name][3, 7] += 1e-3
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert load_lazily(tmp_path / "m")[2].fingerprint() != first
