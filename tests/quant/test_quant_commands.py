"""`normtweak quantize` on a tiny model folder (the saver is replaced by a recorder)."""

import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from normtweak.calib.store import CalibrationSet
from normtweak.cli import main
from normtweak.quant.linear import QuantLinear
from normtweak.testing import tiny_batch, tiny_tokenizer


@pytest.fixture
def tiny_folder(tiny_llama):
    return tiny_llama


@pytest.fixture
def saved(monkeypatch):
    """Record what the command hands to the saver instead of writing a folder."""
    calls = []

    def save_quantized(model, tokenizer, path, *, quant, calibration_sha256=None, extra=None):
        calls.append((model, path, quant, calibration_sha256))
        Path(path).mkdir(parents=True)  # the command publishes what the saver wrote
        (Path(path) / "config.json").write_text("{}")
        return path

    import normtweak.loading.float  # noqa: F401 (imported before normtweak.io is replaced)

    fake = types.ModuleType("normtweak.io")
    fake.save_quantized = save_quantized
    monkeypatch.setitem(sys.modules, "normtweak.io", fake)
    return calls


def test_quantize_gptq_end_to_end(tiny_folder, tmp_path, saved):
    from normtweak.calib.store import base_metadata, calibration_hash

    calib = tmp_path / "calib.safetensors"
    CalibrationSet(tiny_batch(4, 16), base_metadata(tiny_tokenizer(), "text", 0, None)).save(calib)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder), "--bits", "4",
                                  "--group-size", "32", "--method", "gptq", "--data", str(calib),
                                  "--save_dir", str(out)])
    assert r.exit_code == 0, r.output
    (model, _, spec, sha), = saved
    assert (out / "config.json").is_file() and (out / "normtweak-output.json").is_file()
    assert spec.method == "gptq" and spec.group_size == 32
    assert sha == calibration_hash(tiny_batch(4, 16))
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 14


@pytest.mark.parametrize("extra, message", [
    (["--group-size", "48", "--no-group-fallback"], "48 does not divide in_features 64"),
    (["--scheme", "W5A4"], "unknown quantization scheme 'W5A4'"),
    (["--bits", "9"], "bits must be"),
])
def test_quantize_errors(tiny_folder, tmp_path, saved, extra, message):
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder),
                                  "--save-dir", str(tmp_path / "o"), *extra])
    assert r.exit_code != 0 and message in r.output and not saved


def test_scheme_names_and_the_group_fallback(tiny_folder, tmp_path, saved):
    """--scheme gives the field's presets; a group size that does not divide hidden 64 falls
    back to 32 for those layers, and the command says so once."""
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder), "--scheme",
                                  "w4a16_asym", "--group-size", "48", "--save-dir",
                                  str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    (model, _, spec, _), = saved
    assert (spec.bits, spec.group_size, spec.symmetric) == (4, 48, False)
    assert r.output.count("group size 48 does not divide") == 1
    assert "14 layers" in r.output and "use group size 32" in r.output
    assert {m.group_size for m in model.modules() if isinstance(m, QuantLinear)} == {32}
    saved.clear()
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder), "--save-dir",
                                  str(tmp_path / "o2")])
    (model, _, spec, _), = saved
    assert (spec.bits, spec.group_size, spec.symmetric) == (4, 128, True)  # W4A16
    sizes = {n.rsplit(".", 1)[-1]: m.group_size for n, m in model.named_modules()
             if isinstance(m, QuantLinear)}
    assert sizes["down_proj"] == 128 and sizes["q_proj"] == sizes["up_proj"] == 64  # 128 / 64 in


def test_quantize_saves_a_model_that_reloads_identically(tiny_folder, tmp_path):
    """With the real saver: the reloaded model equals quantize_model run in-process."""
    import torch

    from normtweak.config import QuantSpec, RunSpec
    from normtweak.io import load_quantized
    from normtweak.loading.float import load_model
    from normtweak.quant.model import quantize_model

    out = tmp_path / "rtn"
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder), "--bits", "3",
                                  "--group-size", "16", "--save-dir", str(out)])
    assert r.exit_code == 0, r.output
    loaded, _ = load_quantized(out)
    expect, _ = load_model(str(tiny_folder))
    quantize_model(expect, QuantSpec(bits=3, group_size=16), run=RunSpec(progress=False))  # W4A16's symmetric
    ids = tiny_batch(2, 10, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, expect(input_ids=ids).logits)
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == 14
