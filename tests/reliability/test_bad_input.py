"""Bad input through the CLI: a non-zero exit, one clear `Error:` line, no partial output.

Every case of issue 9: missing/unreadable model, unknown architecture, calibration from
another tokenizer or too short, bits/group size invalid for a layer, NaN/Inf in the
activations, truncated or tampered weights, disk full while saving, a newer format.
"""

import errno
import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

from normtweak.calib.store import CalibrationSet, base_metadata
from normtweak.cli import main
from normtweak.testing import tiny_batch, tiny_model


def one_error(res, *needles: str) -> str:
    """Assert a handled failure: exit 1, exactly one `Error:` line holding every needle."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), f"unhandled {res.exception!r}"  # no traceback
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def save_folder(path, model, tokenizer):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("bad")
    save_folder(root / "good", tiny_model("llama"), tokenizer)
    (root / "corpus.txt").write_text("\n\n".join(
        f"Paragraph {i}: the quick brown fox jumps over the lazy dog. " * 6 for i in range(30)))
    return root


def tweak_args(work, model, out, *extra):
    return ["tweak", "--model", str(model), "--save_dir", str(out), "--from-text",
            str(work / "corpus.txt"), "--num-samples", "2", "--seq-len", "32", "--nbits", "3",
            "--group-size", "16", *extra]


def copy_model(work, tmp_path, name="model"):
    return shutil.copytree(work / "good", tmp_path / name)


def no_output(tmp_path, out):
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


# --- the model ---------------------------------------------------------------------


def test_missing_model_path(work, tmp_path):
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, tmp_path / "nowhere" / "m", out)),
              "does not exist")
    no_output(tmp_path, out)


def test_unreadable_model_folder(work, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    one_error(CliRunner().invoke(main, tweak_args(work, tmp_path / "empty", out)),
              "not a model folder (no config.json")
    bad_json = copy_model(work, tmp_path, "badjson")
    (bad_json / "config.json").write_text("{not json")
    one_error(CliRunner().invoke(main, tweak_args(work, bad_json, out)),
              "config.json cannot be read", "not a valid JSON")
    no_output(tmp_path, out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_model_folder_without_read_permission(work, tmp_path):
    folder = copy_model(work, tmp_path)
    (folder / "config.json").chmod(0)
    one_error(CliRunner().invoke(main, tweak_args(work, folder, tmp_path / "out")), "cannot be read")


def test_truncated_float_weights(work, tmp_path):
    folder = copy_model(work, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, folder, out)),
              "cannot be read", "truncated or corrupt")
    no_output(tmp_path, out)


def test_unknown_architecture(work, tmp_path, tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=384, d_model=32, d_ff=64, num_layers=1,
                                             num_heads=2, d_kv=16))
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, save_folder(tmp_path / "t5", t5, tokenizer),
                                                   out)),
              "unsupported architecture 't5'", "llama")
    mystery = copy_model(work, tmp_path, "mystery")
    config = json.loads((mystery / "config.json").read_text())
    config["model_type"] = "mystery"
    (mystery / "config.json").write_text(json.dumps(config))
    one_error(CliRunner().invoke(main, tweak_args(work, mystery, out)),
              "unsupported architecture", "mystery", "normtweak supports model_type in")
    no_output(tmp_path, out)


# --- calibration -------------------------------------------------------------------


def calibration_file(path, tokenizer, samples, seq=32):
    return CalibrationSet(tiny_batch(samples, seq), base_metadata(tokenizer, "text", 0, None)).save(path)


def test_calibration_from_another_tokenizer(work, tmp_path, tokenizer):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(work / "good")
    other.add_tokens(["<another-vocabulary>"])
    data = calibration_file(tmp_path / "other.safetensors", other, 4)
    out = tmp_path / "out"
    args = ["tweak", "--model", str(work / "good"), "--data", str(data), "--save_dir", str(out)]
    one_error(CliRunner().invoke(main, args), "calibration set was made with tokenizer",
              "regenerate the set with this model's tokenizer")
    no_output(tmp_path, out)


def test_calibration_shorter_than_requested(work, tmp_path, tokenizer):
    data = calibration_file(tmp_path / "short.safetensors", tokenizer, 2)
    out = tmp_path / "out"
    args = ["tweak", "--model", str(work / "good"), "--data", str(data), "--save_dir", str(out),
            "--num-samples", "5"]
    one_error(CliRunner().invoke(main, args), "calibration set has 2 samples, 5 needed")
    one_error(CliRunner().invoke(main, tweak_args(work, work / "good", out)[:-4]
                                 + ["--seq-len", "100000"]),
              "fewer than seq_len 100000")
    no_output(tmp_path, out)


# --- quantization settings ---------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--nbits", "9"], "bits must be an integer in 2..8, got 9"),
    (["--nbits", "1"], "bits must be an integer in 2..8, got 1"),
    (["--group-size", "-2"], "group_size must be -1 (per channel), 0 (per tensor)"),
    (["--group-size", "48", "--no-group-fallback"], "group_size 48 does not divide in_features 64"),
])
def test_bits_or_group_size_invalid_for_a_layer(work, tmp_path, flags, message):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    one_error(CliRunner().invoke(main, tweak_args(work, work / "good", out, "--checkpoint-dir",
                                                   str(ckpt), *flags)), message)
    no_output(tmp_path, out)
    assert not ckpt.exists()  # refused before any work or checkpoint


# --- non-finite activations --------------------------------------------------------


def test_overflow_in_a_block_stops_with_its_index_and_keeps_earlier_checkpoints(work, tmp_path,
                                                                               tokenizer):
    model = tiny_model("llama")
    with torch.no_grad():  # finite, but block 1's activations overflow to inf
        model.model.layers[1].post_attention_layernorm.weight.fill_(3e38)
    folder = save_folder(tmp_path / "nan", model, tokenizer)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    one_error(CliRunner().invoke(main, tweak_args(work, folder, out, "--checkpoint-dir", str(ckpt))),
              "NaN/Inf in the output of block 1", "Checkpoints of earlier blocks are kept")
    assert sorted(p.name for p in ckpt.iterdir()) == [  # the failed run released its lock
        "block_0000.safetensors", "run.json"]
    no_output(tmp_path, out)


def test_inf_in_the_weights_is_refused_naming_the_tensor(work, tmp_path, tokenizer):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[5:50].fill_(float("inf"))
    folder = save_folder(tmp_path / "inf", model, tokenizer)
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, folder, out)),
              "model.embed_tokens.weight", "NaN/Inf")
    no_output(tmp_path, out)


# --- saved models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(work):
    out = work / "saved"
    res = CliRunner().invoke(main, tweak_args(work, work / "good", out))
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_tampered_or_truncated_quantized_weights(work, saved, tmp_path, damage):
    folder = shutil.copytree(saved, tmp_path / "q")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "tampered":
        data[len(data) // 2] ^= 0x01  # one flipped bit in the tensor data
    else:
        data = data[: len(data) - 100]
    weights.write_bytes(bytes(data))
    report = tmp_path / "eval.json"
    args = ["eval", "--model", str(folder), "--text", str(work / "corpus.txt"), "--max-windows", "1",
            "--output", str(report)]
    one_error(CliRunner().invoke(main, args), "does not match the sha256 recorded when it was saved",
              "truncated or was altered")
    assert not report.exists()


def test_model_saved_by_a_newer_format_version(work, saved, tmp_path):
    folder = shutil.copytree(saved, tmp_path / "q")
    record = json.loads((folder / "normtweak_quantization.json").read_text())
    record["format_version"] += 1
    (folder / "normtweak_quantization.json").write_text(json.dumps(record))
    report = tmp_path / "eval.json"
    args = ["eval", "--model", str(folder), "--text", str(work / "corpus.txt"), "--max-windows", "1",
            "--output", str(report)]
    one_error(CliRunner().invoke(main, args), "newer than this normtweak reads", "upgrade normtweak")
    assert not report.exists()
    # given to `tweak` as if it were a float model: the same message, not a silent random init
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, folder, out)), "upgrade normtweak")
    no_output(tmp_path, out)


def test_a_quantized_folder_is_not_taken_for_a_float_model(work, saved, tmp_path):
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, saved, out)),
              "holds a model quantized by normtweak, not a float model")
    no_output(tmp_path, out)


# --- disk full ---------------------------------------------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_leaves_no_half_written_model(work, tmp_path, monkeypatch):
    from normtweak.io import save as save_module

    real = save_module.save_file

    def half_then_full(tensors, filename, metadata=None):  # some bytes reach the disk, then ENOSPC
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 3)
        enospc()

    monkeypatch.setattr(save_module, "save_file", half_then_full)
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, work / "good", out)),
              "disk full while saving to", "nothing was written")
    no_output(tmp_path, out)


def test_disk_full_while_checkpointing_keeps_earlier_checkpoints(work, tmp_path, monkeypatch):
    from normtweak.tweak import checkpoint

    real = checkpoint.save_file
    calls = []

    def full_on_second(tensors, path, metadata=None):
        calls.append(path)
        real(tensors, path, metadata=metadata)
        if len(calls) == 2:
            enospc()

    monkeypatch.setattr(checkpoint, "save_file", full_on_second)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    one_error(CliRunner().invoke(main, tweak_args(work, work / "good", out, "--checkpoint-dir",
                                                   str(ckpt))),
              "disk full while writing", "block_0001.safetensors", "--resume")
    assert sorted(p.name for p in ckpt.iterdir()) == ["block_0000.safetensors", "run.json"]
    no_output(tmp_path, out)


def test_disk_full_while_spilling_activations(work, tmp_path, monkeypatch):
    from normtweak.walk import activations

    class FullFile:
        def __init__(self, *args, **kwargs):
            pass

        write = staticmethod(enospc)

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(activations, "open", FullFile, raising=False)
    out = tmp_path / "out"
    one_error(CliRunner().invoke(main, tweak_args(work, work / "good", out, "--activation-budget",
                                                   "0")),
              "disk full while writing activations", "--activation-budget")
    no_output(tmp_path, out)
