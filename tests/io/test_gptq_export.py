"""GPTQ export: an unpacker written here from the format's definition reads the same weights;
load_quantized reads v1 and v2 back; unrepresentable requests are refused before writing."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from normtweak.cli import main
from normtweak.config import QuantSpec, RunSpec
from normtweak.io import load_quantized, round_scales, save_quantized
from normtweak.quant import QuantLinear
from normtweak.quant.model import quantize_model
from normtweak.testing import tiny_batch


def _folder(make_tiny, tokenizer, path, spec, family="llama", edit=None):
    model = make_tiny(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(model, spec, run=RunSpec(progress=False))
    round_scales(model, "gptq")
    if edit is not None:
        edit(model)
    save_quantized(model, tokenizer, path, quant=spec)
    return model


def _stream_values(words: list[int], bits: int, count: int) -> list[int]:
    """Values i = bits [i*b, (i+1)*b) of the little-endian concatenation of 32-bit words."""
    stream = 0
    for k, w in enumerate(words):
        stream |= (w & 0xFFFFFFFF) << (32 * k)
    return [(stream >> (bits * i)) & ((1 << bits) - 1) for i in range(count)]


def _reference_weight(t: dict, name: str, bits: int, version: int) -> torch.Tensor:
    """w[o, i] = scales[g_idx[i], o] * (code[i, o] - z[g_idx[i], o]) in float64, from the spec."""
    qweight, qzeros = t[f"{name}.qweight"], t[f"{name}.qzeros"]
    scales, g_idx = t[f"{name}.scales"].double(), t[f"{name}.g_idx"].long()
    n_in, n_out = qweight.shape[0] * 32 // bits, qweight.shape[1]
    codes = torch.tensor([_stream_values(qweight[:, o].tolist(), bits, n_in) for o in range(n_out)])
    zeros = torch.tensor([_stream_values(qzeros[g].tolist(), bits, n_out)
                          for g in range(qzeros.shape[0])], dtype=torch.float64)
    if version == 1:
        zeros = zeros + 1
    return (scales[g_idx].t() * (codes.double() - zeros[g_idx].t()))


@pytest.mark.parametrize("bits,group_size,symmetric,version,full_range", [
    (4, 32, False, 2, False), (3, 16, True, 1, False), (8, -1, True, 2, False),
    (2, 32, False, 2, False), (3, 16, True, 2, True)])
def test_gptq_export_matches_an_independent_unpacker(make_tiny, tokenizer, tmp_path, bits,
                                                      group_size, symmetric, version, full_range):
    spec = QuantSpec(bits=bits, group_size=group_size, symmetric=symmetric, full_range=full_range)
    model = _folder(make_tiny, tokenizer, tmp_path / "q", spec)
    if full_range:  # the larger extreme's sign: some scales negative, and they survive
        assert any(bool((m.scales < 0).any()) for m in model.modules() if isinstance(m, QuantLinear))
    res = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "q"), "--format", "gptq",
                                    "--save_dir", str(tmp_path / "g"), "--gptq-version",
                                    str(version)])
    assert res.exit_code == 0, res.output
    qc = json.loads((tmp_path / "g" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == bits and qc["sym"] == symmetric
    assert qc["checkpoint_format"] == ("gptq" if version == 1 else "gptq_v2")
    tensors = load_file(str(tmp_path / "g" / "model.safetensors"))
    assert tensors["model.layers.0.mlp.down_proj.scales"].dtype == torch.float16
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            ref = _reference_weight(tensors, name, bits, version)
            assert torch.equal(ref.float(), m.dequantize(torch.float64).float()), name
    loaded, _ = load_quantized(tmp_path / "g")
    ids = tiny_batch(2, 16, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)


def test_gptq_v1_refused_when_a_zero_point_is_zero(make_tiny, tokenizer, tmp_path):
    spec = QuantSpec(bits=4, group_size=32, symmetric=False)
    def zero_point_zero(model):  # a group whose weights are all >= 0 gets zero point 0
        model.get_submodule("model.layers.0.mlp.up_proj").zeros[3, 1] = 0

    _folder(make_tiny, tokenizer, tmp_path / "q", spec, edit=zero_point_zero)
    res = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "q"), "--format", "gptq",
                                    "--save_dir", str(tmp_path / "g"), "--gptq-version", "1"])
    assert res.exit_code == 1 and "zero point of 0" in res.output and "gptq_v2" in res.output
    assert not (tmp_path / "g").exists()


def test_export_refuses_a_non_empty_target_unless_overwrite(make_tiny, tokenizer, tmp_path):
    """The no-data-loss rule: a folder with the user's files is never replaced, even with
    --overwrite; our own earlier export is replaced only with --overwrite."""
    _folder(make_tiny, tokenizer, tmp_path / "q", QuantSpec(bits=4, group_size=32))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    args = ["export", "--model", str(tmp_path / "q"), "--format", "float", "--save_dir",
            str(tmp_path / "out")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "not empty" in res.output
    res = CliRunner().invoke(main, [*args, "--overwrite"])
    assert res.exit_code == 1 and "did not write" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    args[-1] = str(tmp_path / "ours")
    assert CliRunner().invoke(main, args).exit_code == 0
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = CliRunner().invoke(main, [*args, "--overwrite", "--format", "gptq"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "gptq"
    assert not list(tmp_path.glob(".ours*")), "no staging folder left behind"


def test_round_scales_moves_values_to_float16(make_tiny):
    model = make_tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(model, QuantSpec(bits=4, group_size=32), run=RunSpec(progress=False))
    before = {n: m.scales.clone() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert round_scales(model, torch.float16) > 0
    for n, m in model.named_modules():
        if isinstance(m, QuantLinear):
            assert m.scales.dtype == before[n].dtype
            assert torch.equal(m.scales, before[n].half().float())
            assert ((m.scales - before[n]).abs() <= before[n].abs() * 2 ** -11).all()
    assert round_scales(model, torch.float16) == 0
    assert round_scales(model, "compressed-tensors") == 0
    with pytest.raises(ValueError, match="unknown format"):
        round_scales(model, "awq")
