"""`normtweak tweak` on a tiny model folder, offline; bad input gives a clear error and exit 1."""

import json

import torch
from click.testing import CliRunner

from normtweak.cli import main


def test_tweak_command_saves_a_loadable_model(tmp_path, tiny_llama, corpus):
    from normtweak.io import load_quantized

    model_dir = tiny_llama
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["tweak", "--model", str(model_dir), "--from-text", str(corpus),
                                    "--num-samples", "2", "--seq-len", "32", "--save_dir", str(out),
                                    "--nbits", "3", "--group-size", "16", "--lr", "1e-3",
                                    "--export-dequantized", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "normtweak_quantization.json").read_text())
    assert record["quant"]["bits"] == 3 and record["tweak"]["lr"] == 1e-3
    load_quantized(out)
    assert (tmp_path / "plain" / "config.json").is_file()


def test_tweak_command_errors_are_clear(tmp_path, tiny_llama, corpus):
    model_dir = tiny_llama
    runner = CliRunner()
    res = runner.invoke(main, ["tweak", "--model", str(tmp_path / "missing"), "--from-text",
                               str(corpus), "--save_dir", str(tmp_path / "o")])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = runner.invoke(main, ["tweak", "--model", str(model_dir), "--from-text", str(corpus),
                               "--save_dir", str(tmp_path / "o"), "--nbits", "9"])
    assert res.exit_code == 1 and "bits must be an integer in 2..8" in res.output
    res = runner.invoke(main, ["tweak", "--model", str(model_dir), "--from-text", str(corpus),
                               "--seq-len", "32", "--num-samples", "2",
                               "--save_dir", str(tmp_path / "o"), "--group-size", "48",
                               "--no-group-fallback"])
    assert res.exit_code == 1 and "group_size 48 does not divide in_features 64" in res.output
    assert not (tmp_path / "o").exists()


def test_without_data_the_cached_self_generated_set_is_used(tmp_path, tiny_llama, corpus, monkeypatch):
    monkeypatch.setenv("NORMTWEAK_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_llama
    args = ["tweak", "--model", str(model_dir), "--num-samples", "2", "--seq-len", "16",
            "--group-size", "16"]
    res = CliRunner().invoke(main, [*args, "--save-dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    cached = list((tmp_path / "cache" / "calibration").glob("tiny_selfgen_2x16_seed0_*.safetensors"))
    assert len(cached) == 1 and f"-> {cached[0]}" in res.output
    res = CliRunner().invoke(main, [*args, "--save-dir", str(tmp_path / "b")])
    assert res.exit_code == 0 and f"calibration: reusing {cached[0]}" in res.output


def test_run_prints_where_it_wrote_and_never_overwrites_unasked(tmp_path, tiny_llama, corpus, monkeypatch):
    monkeypatch.setenv("NORMTWEAK_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_llama
    out = tmp_path / "out"
    args = ["run", "--model", str(model_dir), "--num-samples", "2", "--seq-len", "16",
            "--text", str(corpus), "--eval-windows", "1", "--group-size", "16",
            "--save-dir", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    report = tmp_path / "out.run.json"
    assert f"saved the tweaked model to {out}; report: {report}" in res.output
    assert "plain quantization, no tweak" in res.output
    assert json.loads(report.read_text())["saved_to"] == str(out)
    before = (out / "model.safetensors").read_bytes()
    res = CliRunner().invoke(main, [*args, "--lr", "1e-2"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert (out / "model.safetensors").read_bytes() == before
    res = CliRunner().invoke(main, [*args, "--lr", "1e-2", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "calibration: reusing" in res.output
    assert json.loads(report.read_text())["tweak"]["lr"] == 1e-2


def test_tweak_a_model_quantized_elsewhere(tmp_path, tiny_llama, corpus):
    """--quantized (alias --precomputed-tensors-path): the checkpoint's codes are kept and
    its spec (not the flags') is used; a missing folder fails before any model loads."""
    from normtweak.io import load_quantized
    from normtweak.loading.foreign import load_quantized_linears

    model_dir = tiny_llama
    runner = CliRunner()
    common = ["--model", str(model_dir), "--from-text", str(corpus), "--num-samples", "2",
              "--seq-len", "32"]
    res = runner.invoke(main, ["quantize", "--model", str(model_dir), "--method", "rtn",
                               "--bits", "3", "--group-size", "16", "--save-dir",
                               str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["tweak", *common, "--precomputed-tensors-path", str(tmp_path / "q"),
                               "--lr", "1e-2", "--save_dir", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert "W3, group_size 16" in res.output
    before = load_quantized_linears(tmp_path / "q")
    after, _ = load_quantized(tmp_path / "t")
    for name, q in before.items():
        assert torch.equal(after.get_submodule(name).qweight, q.qweight)
    res = runner.invoke(main, ["tweak", *common, "--quantized", str(tmp_path / "nope"),
                               "--save_dir", str(tmp_path / "t2")])
    assert res.exit_code == 1 and "--quantized" in res.output and "no such folder" in res.output


def test_tweaked_model_is_saved_in_the_format_it_came_in(tmp_path, tiny_llama, corpus):
    """--quantized from a GPTQ folder: saved as GPTQ (the format's own config), same codes,
    tweaked norms; asking for a format that cannot hold the model fails before any work."""
    from normtweak.io import export_quantized, load_quantized
    from normtweak.loading.foreign import load_quantized_linears

    model_dir = tiny_llama
    runner = CliRunner()
    common = ["--model", str(model_dir), "--from-text", str(corpus), "--num-samples", "2",
              "--seq-len", "32"]
    res = runner.invoke(main, ["quantize", "--model", str(model_dir), "--method", "rtn",
                               "--bits", "4", "--group-size", "32", "--save-dir",
                               str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    export_quantized(tmp_path / "q", "gptq", tmp_path / "g")
    res = runner.invoke(main, ["tweak", *common, "--quantized", str(tmp_path / "g"),
                               "--lr", "1e-2", "--save_dir", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert "saving as gptq" in res.output
    qc = json.loads((tmp_path / "t" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq_v2"
    before = load_quantized_linears(tmp_path / "g")
    after, _ = load_quantized(tmp_path / "t")
    for name, q in before.items():
        assert torch.equal(after.get_submodule(name).codes(), q.codes())
        assert torch.equal(after.get_submodule(name).scales.float(), q.scales.float())
    source, _ = load_quantized(tmp_path / "g")
    norms = [k for k in source.state_dict() if "layernorm" in k]
    assert norms and any(not torch.equal(source.state_dict()[k], after.state_dict()[k])
                         for k in norms)
    res = runner.invoke(main, ["tweak", *common, "--nbits", "4", "--group-size", "16",
                               "--save-format", "gguf", "--save_dir", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "multiple of 32" in res.output
    assert "calibration" not in res.output.lower() and not (tmp_path / "bad").exists()


def test_seq_len_default_follows_the_tweak_mode(tmp_path, tiny_llama, corpus, monkeypatch):
    """512-token windows when the quantization parameters train (the joint default), else 128."""
    import normtweak.calib.text as calib_text

    model_dir = tiny_llama
    seen = []

    def record(tokenizer, text, num_samples, seq_len, *rest, **kw):
        seen.append(seq_len)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(calib_text, "calibration_from_text", record)
    base = ["tweak", "--model", str(model_dir), "--from-text", str(corpus), "--group-size", "16"]
    for extra in ([], ["--preset", "paper"], ["--preset", "joint"], ["--quant-params", "clip"],
                  ["--preset", "joint", "--seq-len", "64"]):
        res = CliRunner().invoke(main, [*base, *extra, "--save-dir", str(tmp_path / "o")])
        assert res.exit_code == 1 and "stopped by the test" in res.output, res.output
    assert seen == [512, 128, 512, 512, 64]  # the default is the joint method
    assert not (tmp_path / "o").exists()
