"""Loading what it should not: weights that do not fill the model, NaN/Inf weights, config
values of the wrong kind, model classes that are not model classes, shard indexes that point
out of their folder, shards whose hashes cannot be (or are not) checked.

Each case goes through the CLI: one `Error:` line naming the file and what is wrong, no output.
"""

import json
import shutil

import pytest
from click.testing import CliRunner
from faultkit import CORPUS, llama_folder, one_error, tweak_args
from safetensors.torch import load_file, save_file

from normtweak.cli import main
from normtweak.io.format import PROVENANCE_NAME, file_sha256


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("loadfaults")
    llama_folder(root / "good", tokenizer, tied=False)  # an LM head of its own
    (root / "corpus.txt").write_text(CORPUS)
    return root


def _tweak(work, model, out):
    return CliRunner().invoke(main, tweak_args(model, work / "corpus.txt", out))


def copy_model(work, tmp_path):
    return shutil.copytree(work / "good", tmp_path / "model")


def no_output(tmp_path, out):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


# --- weights that do not fill the model (they would be random) ------------------------


def test_a_config_with_one_more_layer_than_the_weights_is_refused(work, tmp_path):
    folder = copy_model(work, tmp_path)
    _edit_config(folder, num_hidden_layers=3)
    out = tmp_path / "out"
    one_error(_tweak(work, folder, out), str(folder), "model.layers.2.mlp.down_proj.weight",
              "would be random", "allow_missing=True")
    no_output(tmp_path, out)


def test_weights_lacking_a_blocks_mlp_are_refused(work, tmp_path):
    folder = copy_model(work, tmp_path)
    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("model.layers.1.mlp.")}
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    one_error(_tweak(work, folder, out), "3 tensor(s) the config needs are not in its weights",
              "model.layers.1.mlp.gate_proj.weight")
    no_output(tmp_path, out)


def test_weights_the_model_has_no_place_for_are_refused(work, tmp_path):
    folder = copy_model(work, tmp_path)
    _edit_config(folder, num_hidden_layers=1)
    out = tmp_path / "out"
    one_error(_tweak(work, folder, out), "have no place in the model",
              "model.layers.1.input_layernorm.weight")
    no_output(tmp_path, out)


def test_allow_missing_loads_it_anyway(work, tmp_path):
    from normtweak.loading.float import load_model

    folder = copy_model(work, tmp_path)
    _edit_config(folder, num_hidden_layers=3)
    with pytest.raises(ValueError, match="would be random"):
        load_model(folder)
    model, _ = load_model(folder, allow_missing=True)
    assert model.config.num_hidden_layers == 3


@pytest.mark.parametrize("where", ["lm_head.weight", "model.layers.0.mlp.up_proj.weight",
                                   "model.norm.weight"])
def test_nan_or_inf_in_any_weight_is_refused_at_load_naming_it(work, tmp_path, where):
    folder = copy_model(work, tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights[where].view(-1)[3] = float("nan")
    weights[where].view(-1)[5] = float("inf")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    one_error(_tweak(work, folder, out), f"the weight {where} holds 2 NaN/Inf value(s)")
    no_output(tmp_path, out)


# --- config.json values of the wrong kind ----------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": "64"}, "hidden_size"),
    ({"hidden_size": "abc"}, "hidden_size"),
    ({"num_hidden_layers": -1}, "num_hidden_layers must be a positive integer, got -1"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
])
def test_config_values_of_the_wrong_kind(work, tmp_path, change, message):
    folder = copy_model(work, tmp_path)
    _edit_config(folder, **change)
    out = tmp_path / "out"
    one_error(_tweak(work, folder, out), f"{folder}/config.json", message)
    no_output(tmp_path, out)


# --- quantized folders ------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(work):
    out = work / "saved"
    res = _tweak(work, work / "good", out)
    assert res.exit_code == 0, res.output
    return out


def _eval(work, folder, tmp_path):
    report = tmp_path / "eval.json"
    args = ["eval", "--model", str(folder), "--text", str(work / "corpus.txt"), "--max-windows",
            "1", "--output", str(report)]
    return CliRunner().invoke(main, args), report


@pytest.mark.parametrize("name", ["pipeline", "AutoTokenizer", "logging", 42])
def test_architectures_must_name_a_model_class(work, saved, tmp_path, name):
    folder = shutil.copytree(saved, tmp_path / "q")
    _edit_config(folder, architectures=[name])
    res, report = _eval(work, folder, tmp_path)
    one_error(res, f"architectures[0] is {name!r}, which is not a transformers model class")
    assert not report.exists()


def _reshard(folder, shard_names):
    """Rewrite model.safetensors as shards (first half / second half of the tensors)."""
    tensors = load_file(folder / "model.safetensors")
    keys = sorted(tensors)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for part, name in zip(halves, shard_names, strict=True):
        target = folder / name if not str(name).startswith("/") else type(folder)(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: tensors[k] for k in part}, target, metadata={"format": "pt"})
        weight_map.update({k: str(name) for k in part})
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("outside", ["../outside.safetensors", "ABSOLUTE", "sub/../../x.safetensors"])
def test_a_shard_index_naming_files_outside_the_folder_is_refused(work, saved, tmp_path, outside):
    folder = shutil.copytree(saved, tmp_path / "q")
    if outside == "ABSOLUTE":
        outside = str(tmp_path / "elsewhere" / "outside.safetensors")
    _reshard(folder, ["model-00001.safetensors", outside])
    res, report = _eval(work, folder, tmp_path)
    one_error(res, "model.safetensors.index.json names the shard", repr(outside),
              "not a file inside")
    assert not report.exists()


@pytest.mark.parametrize("index", ["{not json", '{"weight_map": ["a", "b"]}', "[]"])
def test_a_damaged_shard_index_is_named(work, saved, tmp_path, index):
    folder = shutil.copytree(saved, tmp_path / "q")
    _reshard(folder, ["model-00001.safetensors", "model-00002.safetensors"])
    (folder / "model.safetensors.index.json").write_text(index)
    res, report = _eval(work, folder, tmp_path)
    one_error(res, f"{folder / 'model.safetensors.index.json'} is not a shard index")
    assert not report.exists()


@pytest.mark.parametrize("record", ["per file", "one hash (older records)"])
def test_a_resharded_folder_whose_hash_cannot_be_checked_is_refused(work, saved, tmp_path, record):
    folder = shutil.copytree(saved, tmp_path / "q")
    _reshard(folder, ["model-00001.safetensors", "model-00002.safetensors"])
    message = ["has no sha256 in normtweak_quantization.json", "cannot be checked"]
    if record != "per file":
        provenance = json.loads((folder / PROVENANCE_NAME).read_text())
        del provenance["files_sha256"]
        (folder / PROVENANCE_NAME).write_text(json.dumps(provenance))
        message = ["one sha256 for the weights", "2 shards", "cannot be checked"]
    res, report = _eval(work, folder, tmp_path)
    one_error(res, *message)
    assert not report.exists()


def test_every_shard_is_checked_against_its_recorded_hash(work, saved, tmp_path):
    names = ["model-00001.safetensors", "model-00002.safetensors"]
    folder = shutil.copytree(saved, tmp_path / "q")
    _reshard(folder, names)
    record = json.loads((folder / PROVENANCE_NAME).read_text())
    record["files_sha256"] = {n: file_sha256(folder / n) for n in names}
    (folder / PROVENANCE_NAME).write_text(json.dumps(record))
    res, _ = _eval(work, folder, tmp_path)
    assert res.exit_code == 0, res.output  # hashes recorded per shard: it loads
    data = bytearray((folder / names[1]).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / names[1]).write_bytes(bytes(data))
    res, _ = _eval(work, folder, tmp_path / "again")
    one_error(res, str(folder / names[1]), "does not match the sha256 recorded")


def test_a_saved_folder_records_the_hash_of_each_weight_file(saved):
    record = json.loads((saved / PROVENANCE_NAME).read_text())
    assert record["files_sha256"] == {"model.safetensors": file_sha256(saved / "model.safetensors")}
