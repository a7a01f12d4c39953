"""quantize_block / quantize_model on every tiny family: exactly the block linears are
replaced, embeddings and head stay float, outputs stay close at 8 bits."""

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from normtweak import arch
from normtweak.config import QuantSpec, RunSpec
from normtweak.quant.linear import QuantLinear
from normtweak.quant.model import quantize_block, quantize_model
from normtweak.testing import tiny_batch


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def assert_only_block_linears_quantized(model, float_model):
    adapter = arch.get_adapter(model)
    for block, ref_block in zip(adapter.get_blocks(model), adapter.get_blocks(float_model)):
        expect = [n for n, _ in arch.block_linears(ref_block)]
        got = [n for n, m in block.named_modules() if isinstance(m, QuantLinear)]
        assert got == expect and arch.block_linears(block) == []
    outside = {n for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    blocks_prefix = {n for n, m in model.named_modules()
                     if any(m is b for b in adapter.get_blocks(model))}
    assert all(any(n.startswith(p + ".") for p in blocks_prefix) for n in outside)
    assert isinstance(adapter.get_head(model), nn.Linear)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_model_every_family(family, make_tiny, method):
    model = make_tiny(family)
    float_model = copy.deepcopy(model)
    ids = tiny_batch(2, 12, seed=5)
    calib = tiny_batch(4, 12, seed=6)
    spec = QuantSpec(bits=8, group_size=32, method=method)
    quantize_model(model, spec, calibration=calib, batch_size=2, run=RunSpec(progress=False))
    assert_only_block_linears_quantized(model, float_model)
    ref, out = logits(float_model, ids), logits(model, ids)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert not torch.equal(out, ref)


def test_quantize_block_gptq_uses_calibration_hook(make_tiny):
    model = make_tiny("llama")
    adapter = arch.get_adapter(model)
    inputs = arch.capture_block_inputs(model, [tiny_batch(2, 16, seed=1)])
    block = adapter.get_blocks(model)[0]
    names = [n for n, _ in arch.block_linears(block)]
    float_block = copy.deepcopy(block)
    h = inputs.hidden[0]
    extra = inputs.extra(0, h.shape)
    calls = []

    def forward_calibration():
        calls.append(1)
        arch.run_block(block, h, extra)

    spec = QuantSpec(bits=4, group_size=32, method="gptq")
    quantized = quantize_block(block, spec, forward_calibration)
    assert calls == [1] and list(quantized) == names
    assert all(block.get_submodule(n) is q for n, q in quantized.items())
    # GPTQ's block output error is below RTN's on the data it was calibrated on.
    ref = arch.run_block(float_block, h, extra)
    rtn_block = copy.deepcopy(float_block)
    quantize_block(rtn_block, QuantSpec(bits=4, group_size=32))
    err_gptq = (arch.run_block(block, h, extra) - ref).norm()
    err_rtn = (arch.run_block(rtn_block, h, extra) - ref).norm()
    assert err_gptq < err_rtn


def test_errors_and_head(make_tiny):
    model = make_tiny("opt")
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(model, QuantSpec(method="gptq"), run=RunSpec(progress=False))
    with pytest.raises(ValueError, match=r"block 0.*48.*64"):
        quantize_model(model, QuantSpec(group_size=48, group_fallback=False), run=RunSpec(progress=False))
    with pytest.raises(ValueError, match=r"'block 0: fc1': group_size 96 does not divide "
                                         r"in_features 100, nor does any of \[64, 32\]"):
        QuantSpec(group_size=96).check_layer("block 0: fc1", 100)
    block = arch.get_adapter(model).get_blocks(model)[0]
    with pytest.raises(ValueError, match="forward_calibration"):
        quantize_block(block, QuantSpec(method="gptq"))
    quantize_model(model, QuantSpec(bits=8, quantize_head=True), run=RunSpec(progress=False))
    head = arch.get_adapter(model).get_head(model)
    assert isinstance(model.lm_head, QuantLinear) or isinstance(head, QuantLinear)


@pytest.mark.parametrize("family, groups", [("llama", [["self_attn.q_proj", "self_attn.k_proj",
                                                        "self_attn.v_proj"],
                                                       ["self_attn.o_proj"],
                                                       ["mlp.gate_proj", "mlp.up_proj"],
                                                       ["mlp.down_proj"]]),
                                            ("gpt2", None)])
def test_true_sequential_groups_and_inputs(make_tiny, family, groups):
    model = make_tiny(family)
    block = arch.get_adapter(model).get_blocks(model)[0]
    inputs = arch.capture_block_inputs(model, [tiny_batch(2, 16, seed=1)])
    h = inputs.hidden[0]
    extra = inputs.extra(0, h.shape)
    names = [n for n, _ in arch.block_linears(block)]
    seen = []  # which linears are already quantized at each calibration pass

    def forward_calibration():
        seen.append(sorted(n for n, m in block.named_modules() if isinstance(m, QuantLinear)))
        arch.run_block(block, h, extra)

    float_block = copy.deepcopy(block)
    spec = QuantSpec(bits=8, group_size=32, method="gptq")
    quantized = quantize_block(block, replace(spec, true_sequential=True), forward_calibration)
    assert list(quantized) == names
    groups = groups or [[n] for n in names]  # GPT-2's four linears each get their own input
    # Pass 0 sees the float block; pass k sees groups 0..k-1 quantized.
    expect = [sorted(n for g in groups[:k] for n in g) for k in range(len(groups))]
    assert seen == expect
    ref = arch.run_block(float_block, h, extra)
    assert (arch.run_block(block, h, extra) - ref).abs().max() < 0.05 * ref.abs().max()
