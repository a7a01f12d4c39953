"""`normtweak quantize` on a tiny model folder (the saver is replaced by a recorder)."""

import sys
import types

import pytest
from click.testing import CliRunner

from normtweak.calib.store import CalibrationSet
from normtweak.cli import main
from normtweak.quant.linear import QuantLinear
from normtweak.testing import tiny_batch, tiny_model, tiny_tokenizer


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def saved(monkeypatch):
    calls = []
    fake = types.ModuleType("normtweak.io")
    fake.save_quantized = lambda model, tok, path, spec=None: calls.append((model, path, spec))
    monkeypatch.setitem(sys.modules, "normtweak.io", fake)
    return calls


def test_quantize_gptq_end_to_end(tiny_folder, tmp_path, saved):
    from normtweak.calib.store import base_metadata

    calib = tmp_path / "calib.safetensors"
    CalibrationSet(tiny_batch(4, 16), base_metadata(tiny_tokenizer(), "text", 0, None)).save(calib)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder), "--bits", "4",
                                  "--group-size", "32", "--method", "gptq", "--data", str(calib),
                                  "--save_dir", str(out)])
    assert r.exit_code == 0, r.output
    (model, path, spec), = saved
    assert str(path) == str(out) and spec.method == "gptq" and spec.group_size == 32
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 14


@pytest.mark.parametrize("extra, message", [
    (["--method", "gptq"], "--data"),
    (["--group-size", "48"], "48 does not divide in_features 64"),
    (["--bits", "9"], "bits must be"),
])
def test_quantize_errors(tiny_folder, tmp_path, saved, extra, message):
    r = CliRunner().invoke(main, ["quantize", "--model", str(tiny_folder),
                                  "--save-dir", str(tmp_path / "o"), *extra])
    assert r.exit_code != 0 and message in r.output and not saved
