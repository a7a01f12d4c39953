"""Save -> load gives identical logits; exported folders load with plain transformers; bad files refused."""

import errno
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.io import export_dequantized, load_quantized, save_quantized
from normtweak.io import save as save_module
from normtweak.io.format import PROVENANCE_NAME
from normtweak.quant import QuantLinear
from normtweak.testing import tiny_batch
from normtweak.tweak.pipeline import tweak_model

QUANT = QuantSpec(bits=3, group_size=16, symmetric=False)


def _quantized(make_tiny, family, quant=QUANT):
    model = make_tiny(family)
    ids = torch.cat([tiny_batch(1, 16, seed=s) for s in range(2)])
    tweak_model(model, ids, quant, TweakSpec(lr=1e-2), run=RunSpec(progress=False))
    return model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_save_load_identical_and_export_loads_in_plain_transformers(make_tiny, family, tokenizer, tmp_path):
    model = _quantized(make_tiny, family)
    save_quantized(model, tokenizer, tmp_path / "q", quant=QUANT, tweak=TweakSpec(lr=1e-2))
    loaded, tok = load_quantized(tmp_path / "q")
    assert tok is not None and len(tok) == len(tokenizer)
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == sum(
        isinstance(m, QuantLinear) for m in model.modules())
    ids = tiny_batch(2, 16, seed=5)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=0, rtol=0)
    export_dequantized(model, tokenizer, tmp_path / "plain")
    auto = AutoModelForMaskedLM if family in ("bert", "distilbert") else AutoModelForCausalLM
    plain = auto.from_pretrained(tmp_path / "plain").eval()
    assert not any(isinstance(m, QuantLinear) for m in plain.modules())
    torch.testing.assert_close(_logits(plain, ids), _logits(model, ids), atol=1e-4, rtol=0)


def test_provenance_records_the_run(make_tiny, tokenizer, tmp_path):
    save_quantized(_quantized(make_tiny, "llama"), tokenizer, tmp_path / "q", quant=QUANT,
                   tweak=TweakSpec(lr=1e-2), calibration_sha256="abc")
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    record = json.loads((tmp_path / "q" / PROVENANCE_NAME).read_text())
    assert record["format_version"] == 2 and record["normtweak_version"]
    assert record["quant"]["bits"] == 3 and record["quant"]["group_size"] == 16
    assert record["tweak"]["lr"] == 1e-2 and record["calibration_sha256"] == "abc"
    assert len(record["weights_sha256"]) == 64
    assert record["modules"]["model.layers.0.self_attn.q_proj"] == {
        "bits": 3, "group_size": 16, "symmetric": False, "in_features": 64, "out_features": 64,
        "scale_dtype": "float32", "act_order_groups": False}


def _legacy_folder(model, tokenizer, path):
    """A folder exactly as normtweak format version 1 wrote it (quant_method "normtweak")."""
    from safetensors.torch import save_model

    from normtweak.io.format import file_sha256, quantized_module_names

    path.mkdir()
    save_model(model, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["architectures"] = [type(model).__name__]
    config["quantization_config"] = {"quant_method": "normtweak", "format_version": 1,
                                     **QUANT.as_dict(), "quantized_modules":
                                     quantized_module_names(model),
                                     "weights_sha256": file_sha256(path / "model.safetensors")}
    (path / "config.json").write_text(json.dumps(config, default=str))
    tokenizer.save_pretrained(path)


def test_version_1_folders_still_load(make_tiny, tokenizer, tmp_path):
    model = _quantized(make_tiny, "llama")
    _legacy_folder(model, tokenizer, tmp_path / "old")
    with pytest.warns(FutureWarning, match="normtweak export"):
        loaded, _ = load_quantized(tmp_path / "old")
    ids = tiny_batch(2, 16, seed=5)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=0, rtol=0)


@pytest.fixture
def saved(make_tiny, tokenizer, tmp_path):
    path = tmp_path / "q"
    save_quantized(_quantized(make_tiny, "llama"), tokenizer, path, quant=QUANT)
    return path


def test_tampered_and_truncated_weights_refused(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or was altered"):
        load_quantized(saved)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated or was altered"):
        load_quantized(saved)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_quantized(saved, verify=False)


def test_newer_format_version_refused(saved):
    record = json.loads((saved / PROVENANCE_NAME).read_text())
    record["format_version"] = 99
    (saved / PROVENANCE_NAME).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="format version 99, newer.*upgrade normtweak"):
        load_quantized(saved)


def test_not_a_normtweak_folder(tmp_path, make_tiny):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_quantized(tmp_path)
    make_tiny("llama").save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="not saved by normtweak"):
        load_quantized(tmp_path / "plain")
    with pytest.raises(ValueError, match="no QuantLinear"):
        save_quantized(make_tiny("llama"), None, tmp_path / "x", quant=QUANT)


def test_disk_full_leaves_no_partial_output_and_keeps_old_model(saved, make_tiny, tokenizer, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(save_module, "save_file", full)
    with pytest.raises(OSError, match="disk full while saving"):
        save_quantized(_quantized(make_tiny, "llama"), tokenizer, saved, quant=QUANT,
                       overwrite=True)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(OSError, match="disk full"):
        save_quantized(_quantized(make_tiny, "llama"), tokenizer, saved.parent / "new", quant=QUANT)
    assert not (saved.parent / "new").exists()


def test_plain_transformers_refuses_a_version_1_folder(make_tiny, tokenizer, tmp_path):
    """Loading a 0.1 folder with from_pretrained must not give random linears silently: with
    normtweak imported (as here) transformers raises, naming the conversion command."""
    _legacy_folder(_quantized(make_tiny, "llama"), tokenizer, tmp_path / "old")
    with pytest.raises(ValueError, match="normtweak export"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "old")


def test_export_migrates_a_version_1_folder(make_tiny, tokenizer, tmp_path):
    from click.testing import CliRunner

    from normtweak.cli import main

    model = _quantized(make_tiny, "llama")
    _legacy_folder(model, tokenizer, tmp_path / "old")
    res = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "old"), "--format",
                                    "compressed-tensors", "--save_dir", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    from transformers import CompressedTensorsConfig

    plain = AutoModelForCausalLM.from_pretrained(
        tmp_path / "new", quantization_config=CompressedTensorsConfig(dequantize=True)).eval()
    ids = tiny_batch(2, 16, seed=5)
    torch.testing.assert_close(_logits(plain, ids), _logits(model, ids), rtol=1e-5, atol=1e-6)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_library_save_never_destroys_a_users_folder(make_tiny, tokenizer, tmp_path):
    """save_quantized / export_dequantized / write_model follow the commands' rule: a non-empty
    folder is refused, and overwrite=True replaces only a folder normtweak wrote."""
    from normtweak.io.export import Provenance, write_model
    from normtweak.outputs import MARKER, TargetExistsError

    model = _quantized(make_tiny, "llama")
    mine = tmp_path / "models"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "other-model").mkdir()
    (mine / "other-model" / "config.json").write_text("{}")
    before = _snapshot(mine)
    savers = {
        "save_quantized": lambda path, **kw: save_quantized(model, tokenizer, path, quant=QUANT, **kw),
        "export_dequantized": lambda path, **kw: export_dequantized(model, tokenizer, path, **kw),
        "write_model gptq": lambda path, **kw: write_model(model, tokenizer, path, "gptq",
                                                          provenance=Provenance(quant=QUANT), **kw),
    }
    for name, save in savers.items():
        with pytest.raises(TargetExistsError, match="path .*models exists and is not empty.*"
                                                    "overwrite=True"):
            save(mine)
        with pytest.raises(TargetExistsError, match="files normtweak did not write.*nothing is deleted"):
            save(mine, overwrite=True)
        assert _snapshot(mine) == before, name
        # a folder the library wrote: refused without overwrite, replaced with it
        out = tmp_path / name.replace(" ", "_")
        save(out)
        assert (out / MARKER).is_file()
        with pytest.raises(TargetExistsError, match="is a normtweak output.*overwrite=True"):
            save(out)
        (out / "config.json").write_text("stale")
        save(out, overwrite=True)
        assert (out / "config.json").read_text() != "stale"
        # ... but not once somebody put a file of their own in it
        (out / "mine.txt").write_text("keep me")
        with pytest.raises(TargetExistsError, match="also holds other files \\(mine.txt\\)"):
            save(out, overwrite=True)
        assert (out / "mine.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    loaded, _ = load_quantized(tmp_path / "save_quantized")
    ids = tiny_batch(2, 16, seed=5)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=0, rtol=0)
