"""Where things go and what the user sees: the user cache, one calibration-cache convention
shared by generate-data and run, fast answers for unreachable hub ids and bad data paths."""

import time
from dataclasses import replace

import pytest
from click.testing import CliRunner

from normtweak import assets, hub
from normtweak.cli import main
from normtweak.loading import float as float_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTWEAK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def model_dir(tmp_path, make_tiny, tokenizer):
    path = tmp_path / "tiny-llama"
    make_tiny("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_offline_models_are_converted_into_the_user_cache(cache, monkeypatch, tmp_path):
    made = []

    def fake_convert(dest):
        made.append(dest)
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"")
        return dest

    monkeypatch.setattr(assets, "convert_smollm2", fake_convert)
    monkeypatch.chdir(tmp_path)
    first = assets.resolve_model("smollm2-135m")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert assets.resolve_model("smollm2-135m") == first == str(cache / "models" / "smollm2-135m")
    assert len(made) == 1  # a new working directory does not convert again
    assert not (tmp_path / "models").exists()


def test_cache_dir_flag_sets_the_cache(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("NORMTWEAK_CACHE", raising=False)
    res = CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "c"), "eval", "--help"])
    assert res.exit_code == 0
    assert os.environ["NORMTWEAK_CACHE"] == str(tmp_path / "c")


def test_generate_data_and_run_share_one_calibration_cache(cache, model_dir, tokenizer):
    from normtweak.loading.float import load_model
    from normtweak.tweak.run import CalibrationKey, calibration_ids

    res = CliRunner().invoke(main, ["generate-data", "--model", str(model_dir), "--num-samples", "2",
                                    "--seq-len", "16", "--seed", "3"])
    assert res.exit_code == 0, res.output
    written = list((cache / "calibration").glob("*.safetensors"))
    assert len(written) == 1 and f"wrote {written[0]}" in res.output
    assert written[0].name.startswith("tiny-llama_selfgen_2x16_seed3_")
    model, tok = load_model(model_dir)
    said = []
    key = CalibrationKey(str(model_dir), "selfgen", 2, 16, 3)
    calib = calibration_ids(model, tok, key, None, said.append)
    assert said == [f"calibration: reusing {written[0]}"]
    # another seed or size is not taken for it
    said.clear()
    calibration_ids(model, tok, replace(key, seed=4), None, said.append)
    assert "reusing" not in said[0] and len(list((cache / "calibration").iterdir())) == 2
    assert calib.input_ids.shape == (2, 16)
    res = CliRunner().invoke(main, ["generate-data", "--model", str(model_dir), "--num-samples", "2",
                                    "--seq-len", "16", "--seed", "3"])
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_unreachable_hub_id_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not reachable"):
        float_model.load_model("nobody-knows/no-such-model")
    assert time.perf_counter() - t0 < 5


def test_hub_check_is_a_short_connect(monkeypatch):
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.perf_counter()
    assert hub.hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - t0 < 3


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the data path was checked")

    monkeypatch.setattr(float_model, "load_model", refuse)


@pytest.mark.parametrize("command", ["tweak", "quantize"])
def test_data_paths_are_checked_before_the_model_loads(tmp_path, no_model_load, command):
    text = tmp_path / "corpus.txt"
    text.write_text("Some words.\n\nMore words.\n")
    extra = ["--method", "gptq"] if command == "quantize" else []
    base = [command, "--model", "whatever", "--save-dir", str(tmp_path / "o"), *extra]
    res = CliRunner().invoke(main, [*base, "--data", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 1 and "no such file" in res.output
    res = CliRunner().invoke(main, [*base, "--data", str(text)])
    assert res.exit_code == 1 and "not a calibration set" in res.output
    assert f"use --from-text {text}" in res.output and "corrupt" not in res.output


def test_other_sampling_settings_get_their_own_cache_name(cache, model_dir):
    res = CliRunner().invoke(main, ["generate-data", "--model", str(model_dir), "--num-samples", "2",
                                    "--seq-len", "16", "--temperature", "0.7"])
    assert res.exit_code == 0, res.output
    (written,) = (cache / "calibration").glob("*.safetensors")
    assert written.name.startswith("tiny-llama_selfgen-") and "_2x16_seed0_" in written.name
