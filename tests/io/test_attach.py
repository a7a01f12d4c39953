"""attach_quantized: a float model gets a checkpoint's QuantLinears and nothing else."""

import warnings

import pytest
import torch

from normtweak.config import QuantSpec, RunSpec
from normtweak.io import load_quantized, save_quantized
from normtweak.loading.foreign import attach_quantized
from normtweak.quant import QuantLinear
from normtweak.quant.model import quantize_model
from normtweak.testing import tiny_batch


@pytest.mark.parametrize("fmt", ["compressed-tensors", "gptq"])
def test_attach_swaps_only_the_quantized_linears(make_tiny, tokenizer, tmp_path, fmt):
    from normtweak.io import export_quantized

    spec = QuantSpec(bits=4, group_size=32, symmetric=True)
    quantized = make_tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(quantized, spec, run=RunSpec(progress=False))
        save_quantized(quantized, tokenizer, tmp_path / "q", quant=spec)
        source = tmp_path / "q"
        if fmt == "gptq":
            source = export_quantized(tmp_path / "q", "gptq", tmp_path / "g")
    float_model = make_tiny("llama")
    norms = {k: v.clone() for k, v in float_model.state_dict().items() if "norm" in k}
    names = attach_quantized(float_model, source)
    assert len(names) == 14 and all(isinstance(float_model.get_submodule(n), QuantLinear)
                                    for n in names)
    assert all(torch.equal(float_model.state_dict()[k], v) for k, v in norms.items())
    loaded, _ = load_quantized(source)
    ids = tiny_batch(2, 16, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(float_model(input_ids=ids).logits,
                                   loaded(input_ids=ids).logits, rtol=0, atol=0)


def test_attach_refuses_another_architecture(make_tiny, tokenizer, tmp_path):
    spec = QuantSpec(bits=4, group_size=32, symmetric=True)
    quantized = make_tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(quantized, spec, run=RunSpec(progress=False))
        save_quantized(quantized, tokenizer, tmp_path / "q", quant=spec)
    with pytest.raises(ValueError, match="same architecture"):
        attach_quantized(make_tiny("opt"), tmp_path / "q")


def test_attach_to_block_swaps_one_block_and_keeps_its_norms(make_tiny, tokenizer, tmp_path):
    from normtweak import arch
    from normtweak.loading.foreign import attach_to_block, load_quantized_linears

    spec = QuantSpec(bits=4, group_size=32, symmetric=False)
    quantized = make_tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(quantized, spec, run=RunSpec(progress=False))
        save_quantized(quantized, tokenizer, tmp_path / "q", quant=spec)
    linears = load_quantized_linears(tmp_path / "q")
    model = make_tiny("llama")
    blocks = arch.get_adapter(model).get_blocks(model)
    before = {k: v.clone() for k, v in blocks[1].state_dict().items()}
    names = attach_to_block(model, blocks[0], linears)
    assert len(names) == 7 and all(isinstance(blocks[0].get_submodule(n), QuantLinear) for n in names)
    assert not any(isinstance(m, QuantLinear) for m in blocks[1].modules())
    assert all(torch.equal(blocks[1].state_dict()[k], v) for k, v in before.items())
    q = blocks[0].get_submodule("self_attn.q_proj")
    ref = quantized.get_submodule("model.layers.0.self_attn.q_proj")
    assert torch.equal(q.dequantize(torch.float32), ref.dequantize(torch.float32))
