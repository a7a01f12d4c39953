"""Errors before the slow work, in words (issue 23, part 2), through the CLI: unwritable or
clashing outputs, a schedule that turns a learning rate negative, token ids past the model's
vocabulary, NaN weights under `quantize`, and options that would silently have no effect."""

import json
import os

import pytest
import torch
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.testing import tiny_batch, tiny_corpus, tiny_model


def one_error(res, *needles: str) -> str:
    """Exit 1 with exactly one `Error:` line holding every needle (no traceback)."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), f"unhandled {res.exception!r}"
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli-checks")
    tiny_model("llama").save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    tiny_corpus(root / "corpus.txt")
    return root


@pytest.fixture
def loads(monkeypatch):
    """Records every model load: the checks below must fail before any."""
    import normtweak.loading.float as float_model

    calls, real = [], float_model.load_model

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(float_model, "load_model", spy)
    return calls


def tweak(work, out, *extra):
    return ["tweak", "--model", str(work / "tiny"), "--from-text", str(work / "corpus.txt"),
            "--num-samples", "2", "--seq-len", "16", "--eval-windows", "0", "--save-dir",
            str(out), *extra]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_save_dir_is_refused_before_loading(work, tmp_path, loads):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    one_error(CliRunner().invoke(main, tweak(work, locked / "out")), "--save-dir",
              "cannot write")
    assert loads == []


def test_outputs_under_a_file_or_clashing_are_refused_before_loading(work, tmp_path, loads):
    (tmp_path / "a_file").write_text("mine")
    one_error(CliRunner().invoke(main, tweak(work, tmp_path / "a_file" / "out")),
              "--save-dir", "is a file, not a folder")
    one_error(CliRunner().invoke(main, tweak(work, tmp_path / "out", "--checkpoint-dir",
                                             str(tmp_path / "out"))),
              "--checkpoint-dir and --save-dir name the same folder")
    one_error(CliRunner().invoke(main, tweak(work, tmp_path / "out", "--export-dequantized",
                                             str(tmp_path / "a_file" / "plain"))),
              "--export-dequantized", "is a file, not a folder")
    assert loads == [] and (tmp_path / "a_file").read_text() == "mine"


def test_a_scale_that_makes_a_learning_rate_negative_is_refused_up_front(work, tmp_path, loads):
    one_error(CliRunner().invoke(main, tweak(work, tmp_path / "out", "--scale", "-2")),
              "scale must be a finite number >= -1")
    assert loads == []


def test_token_ids_past_the_vocabulary_are_refused(work, tmp_path):
    """A calibration file whose metadata names the tokenizer but a wrong vocabulary size (so its
    own check passes), with ids that do not fit the model's embedding (384 rows): refused
    naming the file, no IndexError."""
    from normtweak.calib.store import CalibrationSet, base_metadata
    from normtweak.testing import tiny_tokenizer

    ids = tiny_batch(2, 16)
    ids[1, 3] = 1000
    path = tmp_path / "calib.safetensors"
    meta = {**base_metadata(tiny_tokenizer(), "text", 0, None), "vocab_size": 50000}
    CalibrationSet(ids, meta).save(path)
    for command in ("tweak", "quantize"):
        args = ["--model", str(work / "tiny"), "--data", str(path), "--save-dir",
                str(tmp_path / command)]
        extra = ["--eval-windows", "0"] if command == "tweak" else ["--method", "gptq"]
        one_error(CliRunner().invoke(main, [command, *args, *extra]), f"--data {path}",
                  "token id 1000 is not in the model's vocabulary (384 embeddings)")
    assert not (tmp_path / "tweak").exists() and not (tmp_path / "quantize").exists()


def test_nan_weights_under_quantize_are_named_before_quantizing(work, tmp_path, tokenizer):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[3, 5] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    tokenizer.save_pretrained(tmp_path / "nan")
    one_error(CliRunner().invoke(main, ["quantize", "--model", str(tmp_path / "nan"),
                                        "--save-dir", str(tmp_path / "out")]),
              "model.layers.0.mlp.up_proj.weight", "NaN/Inf")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, extra, needle", [
    ("quantize", ["--data", "/nonexistent.safetensors"], "--data has no effect with --method rtn"),
    ("quantize", ["--damp", "0.05"], "--damp has no effect with --method rtn"),
    ("quantize", ["--num-samples", "16"], "--num-samples has no effect with --method rtn"),
    ("tweak", ["--act-order"], "--act-order has no effect with --method rtn"),
    ("quantize", ["--scheme", "W4A16_ASYM", "--full-range"],
     "--full-range has no effect with an asymmetric scheme"),
    ("tweak", ["--asymmetric", "--no-full-range"],
     "--full-range has no effect with an asymmetric scheme"),
    ("tweak", ["--preset", "paper", "--quant-lr", "0.01"],
     "--quant-lr has no effect when no quantization parameters train"),
    ("tweak", ["--end-to-end-lr", "0.001"], "--end-to-end-lr has no effect without"),
    ("tweak", ["--grid-search-lr", "0.001", "--export-dequantized", "/tmp/x"],
     "--export-dequantized has no effect in a grid search"),
    ("tweak", ["--grid-search-lr", "0.001", "--checkpoint-dir", "/tmp/x"],
     "--checkpoint-dir has no effect in a grid search"),
])
def test_options_that_would_have_no_effect_are_refused_by_name(work, tmp_path, loads, command,
                                                               extra, needle):
    args = (tweak(work, tmp_path / "out", *extra) if command == "tweak" else
            ["quantize", "--model", str(work / "tiny"), "--save-dir", str(tmp_path / "out"),
             *extra])
    one_error(CliRunner().invoke(main, args), needle)
    assert loads == [] and not (tmp_path / "out").exists()


def test_quantizer_options_with_an_imported_checkpoint_are_refused(work, tmp_path):
    r = CliRunner().invoke(main, ["quantize", "--model", str(work / "tiny"), "--save-dir",
                                  str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    one_error(CliRunner().invoke(main, tweak(work, tmp_path / "out", "--quantized",
                                             str(tmp_path / "q"), "--bits", "3")),
              "--bits has no effect with --quantized")


def test_seq_len_that_differs_from_the_calibration_set_is_refused(work, tmp_path):
    from normtweak.calib.store import CalibrationSet, base_metadata
    from normtweak.testing import tiny_tokenizer

    path = tmp_path / "calib.safetensors"
    CalibrationSet(tiny_batch(2, 32), base_metadata(tiny_tokenizer(), "text", 0, None)).save(path)
    res = CliRunner().invoke(main, ["tweak", "--model", str(work / "tiny"), "--data", str(path),
                                    "--seq-len", "64", "--eval-windows", "0", "--save-dir",
                                    str(tmp_path / "out")])
    one_error(res, "--seq-len 64", "its samples are 32 tokens long")
    assert not (tmp_path / "out").exists()


def test_the_group_fallback_is_said_once_and_recorded_per_layer(work, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, tweak(work, out))  # W4A16: group 128, hidden 64
    assert res.exit_code == 0, res.output
    assert res.output.count("group size 128 does not divide") == 1
    modules = json.loads((out / "normtweak_quantization.json").read_text())["modules"]
    assert {m["group_size"] for m in modules.values()} == {64, 128}


def test_gguf_for_a_model_outside_the_llama_family_is_refused_before_tweaking(
        work, tmp_path, tokenizer, monkeypatch):
    import normtweak.tweak.pipeline as pipeline

    tiny_model("opt").save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    calls = []
    monkeypatch.setattr(pipeline, "tweak_model", lambda *a, **k: calls.append(1))
    args = tweak(work, tmp_path / "out", "--save-format", "gguf", "--group-size", "32")
    args[args.index("--model") + 1] = str(tmp_path / "opt")
    res = CliRunner().invoke(main, args)
    one_error(res, "GGUF export supports the Llama family", "opt")
    assert not calls and not (tmp_path / "out").exists()
