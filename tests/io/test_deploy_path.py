"""The user's path through the CLI: `tweak` with its defaults (the joint method, W4A16), `quantize`,
or a checkpoint someone else made -> `export` in every format -> load. The default output loads
in plain transformers, in a process that never imports normtweak, and generates the same greedy
tokens as normtweak.load_quantized."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.io import load_quantized
from normtweak.io.export import EXPORT_FORMATS
from normtweak.quant import QuantLinear
from normtweak.testing import tiny_batch


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from normtweak.arch import prepare_model
    from normtweak.testing import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("deploy")
    tiny = root / "tiny"
    prepare_model(tiny_model("llama")).save_pretrained(tiny)
    tiny_tokenizer().save_pretrained(tiny)
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog. "
                                  * 6 for i in range(30)), encoding="utf-8")
    common = ["--model", str(tiny), "--from-text", str(corpus), "--num-samples", "8",
              "--seq-len", "32"]
    runner = CliRunner()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = runner.invoke(main, ["tweak", *common, "--eval-windows", "0",
                                 "--save-dir", str(root / "tweaked")])
        assert r.exit_code == 0, r.output
        out["tweaked"] = root / "tweaked"
        r = runner.invoke(main, ["quantize", "--model", str(tiny), "--save-dir",
                                 str(root / "quantized")])
        assert r.exit_code == 0, r.output
        out["quantized"] = root / "quantized"
        # "someone else's" checkpoint: a GPTQ folder (as AutoRound and GPTQModel write them)
        r = runner.invoke(main, ["export", "--model", str(root / "quantized"), "--format", "gptq",
                                 "--save-dir", str(root / "elsewhere")])
        assert r.exit_code == 0, r.output
        out["imported"] = root / "elsewhere"
        # tweaking a quantized checkpoint whose group sizes differ per layer (64 where 128 does
        # not divide the inputs), as normtweak's own W4A16 output of SmolLM2
        r = runner.invoke(main, ["tweak", *common, "--quantized", str(root / "quantized"),
                                 "--eval-windows", "0", "--save-dir", str(root / "retweaked")])
        assert r.exit_code == 0, r.output
        out["imported-tweaked"] = root / "retweaked"
    return out


def test_tweak_with_no_flags_runs_the_joint_method_in_w4a16(folders):
    record = json.loads((folders["tweaked"] / "normtweak_quantization.json").read_text())
    assert record["quant"]["bits"] == 4 and record["quant"]["symmetric"] is True
    assert record["quant"]["group_size"] == 128
    assert record["tweak"]["quant_params"] == "clip_round" and record["tweak"]["loss"] == "rel_mse"
    # the full-range grid: a group whose larger extreme is positive has a negative scale
    assert record["quant"]["full_range"] is True
    from safetensors.torch import load_file

    scales = [t for f in folders["tweaked"].glob("*.safetensors")
              for k, t in load_file(str(f)).items() if k.endswith("weight_scale")]
    assert scales and any(bool((t < 0).any()) for t in scales)
    sizes = {name.rsplit(".", 1)[-1]: m["group_size"] for name, m in record["modules"].items()}
    assert sizes["down_proj"] == 128 and sizes["q_proj"] == 64  # hidden 64 falls back to 64
    qc = json.loads((folders["tweaked"] / "config.json").read_text())["quantization_config"]
    groups = {g["weights"]["group_size"] for g in qc["config_groups"].values()}
    assert groups == {64, 128}


def _quantized(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def test_an_imported_checkpoint_with_fallback_groups_is_tweaked_in_its_own_groups(folders):
    record = json.loads((folders["imported-tweaked"] / "normtweak_quantization.json").read_text())
    sizes = {name.rsplit(".", 1)[-1]: m["group_size"] for name, m in record["modules"].items()}
    assert sizes["down_proj"] == 128 and sizes["q_proj"] == 64
    theirs, _ = load_quantized(folders["quantized"])
    ours, _ = load_quantized(folders["imported-tweaked"])
    for name, q in _quantized(theirs).items():  # the paper's way on an import: codes kept
        assert torch.equal(_quantized(ours)[name].codes(), q.codes()), name


@pytest.mark.parametrize("source", ["tweaked", "quantized", "imported", "imported-tweaked"])
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_exports_what_it_was_given(folders, source, fmt, tmp_path):
    """Codes exactly, scales as the format stores them (float16 in GPTQ and GGUF), norms exactly;
    the float export holds the dequantized weights."""
    import transformers

    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(main, ["export", "--model", str(folders[source]), "--format", fmt,
                                      "--save-dir", str(out)])
    assert r.exit_code == 0, r.output
    src, _ = load_quantized(folders[source])
    if fmt == "float":
        back = transformers.AutoModelForCausalLM.from_pretrained(out)
        for name, q in _quantized(src).items():  # in the checkpoint's dtype (GPTQ: float16)
            expected = q.dequantize(torch.float32).to(q.scales.dtype).float()
            torch.testing.assert_close(back.get_submodule(name).weight.float(), expected,
                                       rtol=0, atol=0)
    else:
        back, _ = load_quantized(out)
        theirs = _quantized(back)
        for name, q in _quantized(src).items():
            b = theirs[name]
            assert torch.equal(b.codes(), q.codes()), name
            scale = q.scales.float()
            if fmt in ("gptq", "gguf"):
                scale = scale.half().float()
            # GGUF stores a scale per 32 inputs: compare per input column
            assert torch.equal(b.scales.float()[:, b.g_idx.long()], scale[:, q.g_idx.long()]), name
    norms = {k: v for k, v in src.state_dict().items() if "norm" in k}
    sd = back.state_dict()
    assert norms and all(torch.equal(sd[k].float(), v.float()) for k, v in norms.items())


GENERATE = """
import json, sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=1)
assert not any(m.startswith("normtweak") for m in sys.modules), "normtweak was imported"
assert not any(type(m).__name__ == "QuantLinear" for m in model.modules())
print(json.dumps(out.tolist()))
"""


def test_default_output_generates_the_same_tokens_in_plain_transformers(folders):
    ids = tiny_batch(2, 6, seed=11)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", GENERATE, str(folders["tweaked"]),
                           json.dumps(ids.tolist())], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, _ = load_quantized(folders["tweaked"])
    with torch.no_grad():
        expected = ours.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=1)
    assert theirs == expected.tolist()


@pytest.mark.parametrize("fmt", ["gptq", "gguf"])
def test_float16_rounding_is_said_once_for_the_whole_model(folders, fmt, tmp_path):
    """The tweaked folder keeps float32 scales; GPTQ and GGUF store float16: one summary
    warning (how many layers, how far), not one per layer."""
    from normtweak.io.export import export_quantized
    from normtweak.io.format import ScaleRoundingWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_quantized(folders["tweaked"], fmt, tmp_path / "out")
    rounding = [w for w in caught if issubclass(w.category, ScaleRoundingWarning)]
    assert len(rounding) == 1, [str(w.message) for w in rounding]
    assert f"{fmt.upper()} stores scales as float16" in str(rounding[0].message)
    assert "of 14 quantized layers" in str(rounding[0].message)


def test_the_console_shows_that_warning_as_one_line(folders, tmp_path):
    """Through the CLI (a real process), normtweak's warning is one line, without the source
    line Python's default format adds."""
    env = dict(os.environ, PYTHONWARNINGS="always")
    proc = subprocess.run([sys.executable, "-m", "normtweak", "export", "--model",
                           str(folders["tweaked"]), "--format", "gptq", "--save-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if "stores scales as float16" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: GPTQ stores scales"), proc.stderr
    assert "rounding_summary" not in proc.stderr


def test_float_export_is_float32_unless_asked(folders, tmp_path):
    """--format float writes the exact dequantized weights (float32 for our folders);
    --dtype bfloat16 halves the file; --dtype is refused for another format."""
    from safetensors import safe_open

    def dtypes(folder):
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            return {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118

    for extra, want in (([], "torch.float32"), (["--dtype", "bfloat16"], "torch.bfloat16")):
        out = tmp_path / want
        r = CliRunner().invoke(main, ["export", "--model", str(folders["tweaked"]), "--format",
                                      "float", "--save-dir", str(out), *extra])
        assert r.exit_code == 0, r.output
        assert {str(d) for d in dtypes(out)} == {want}
    r = CliRunner().invoke(main, ["export", "--model", str(folders["tweaked"]), "--format",
                                  "gguf", "--dtype", "float16", "--save-dir", str(tmp_path / "g")])
    assert r.exit_code == 1 and "--dtype applies to --format float" in r.output


def test_export_reads_one_gguf_file(folders, tmp_path):
    """--model takes a .gguf file as its help says, not only the folder holding it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(main, ["export", "--model", str(folders["tweaked"]), "--format",
                                      "gguf", "--save-dir", str(tmp_path / "g")])
        assert r.exit_code == 0, r.output
        (gguf,) = (tmp_path / "g").glob("*.gguf")
        r = CliRunner().invoke(main, ["export", "--model", str(gguf), "--format", "gptq",
                                      "--save-dir", str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    a, _ = load_quantized(tmp_path / "g")
    b, _ = load_quantized(tmp_path / "back")
    for name, q in _quantized(a).items():
        assert torch.equal(_quantized(b)[name].codes(), q.codes()), name


def test_a_gptq_layer_with_one_group_keeps_its_group_size(folders):
    """The tiny model's layers hold one group each (64 of 64 inputs, 128 of 128): read back from
    the GPTQ export, each keeps the group size its source had (the config's group_size and
    its dynamic override), not 'one scale per output channel' (the same numbers)."""
    src, _ = load_quantized(folders["quantized"])
    back, _ = load_quantized(folders["imported"])
    sizes = {n: q.spec.group_size for n, q in _quantized(back).items()}
    assert sizes == {n: q.spec.group_size for n, q in _quantized(src).items()}
    assert {g for g in sizes.values()} == {64, 128}
