"""Toy INT8 norm and W8A8 linears against float64 formulas written out here."""

import copy

import pytest
import torch
from torch import nn

from normtweak import arch
from normtweak.studies.int8 import (
    Int8Norm,
    W8A8Linear,
    fake_quant,
    quantize_model_w8a8,
    wrap_norms_int8,
)
from normtweak.testing import tiny_batch


def fq_ref(x: torch.Tensor, axis=None) -> torch.Tensor:
    x = x.double()
    amax = x.abs().amax() if axis is None else x.abs().amax(axis, keepdim=True)
    s = amax / 127
    return torch.clamp(torch.round(x / s), -127, 127) * s


def test_fake_quant_per_tensor_and_ste():
    x = torch.randn(4, 9, 32, requires_grad=True)
    y = fake_quant(x)
    torch.testing.assert_close(y.double(), fq_ref(x.detach()), rtol=0, atol=1e-6)
    assert len(torch.unique(torch.round(y.detach() / (x.detach().abs().max() / 127)))) <= 255
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("quantize_weight", [False, True])
def test_int8_layernorm_matches_formula(quantize_weight):
    torch.manual_seed(0)
    ln = nn.LayerNorm(32)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.3 * torch.randn(32))
        ln.bias.copy_(0.1 * torch.randn(32))
    x = torch.randn(3, 5, 32)
    q = Int8Norm(ln, quantize_weight=quantize_weight)
    xd = x.double()
    normed = (xd - xd.mean(-1, keepdim=True)) / torch.sqrt(xd.var(-1, unbiased=False, keepdim=True)
                                                           + ln.eps)
    w = fq_ref(ln.weight.detach()) if quantize_weight else ln.weight.detach().double()
    expect = fq_ref(normed * w + ln.bias.detach().double())
    torch.testing.assert_close(q(x).double(), expect, rtol=0, atol=2e-5)
    q(x).sum().backward()  # STE: the wrapped norm can still be trained
    assert ln.weight.grad is not None


def test_w8a8_linear_matches_formula():
    torch.manual_seed(0)
    lin = nn.Linear(48, 20)
    x = torch.randn(2, 6, 48) * torch.linspace(0.1, 4, 48)
    q = W8A8Linear.from_linear(lin)
    assert q.weight_int8.dtype == torch.int8 and int(q.weight_int8.abs().max()) == 127
    w_ref = fq_ref(lin.weight.detach(), axis=1)
    expect = fq_ref(x, axis=-1) @ w_ref.t() + lin.bias.detach().double()
    torch.testing.assert_close(q(x).double(), expect, rtol=1e-5, atol=1e-5)
    empty = W8A8Linear(48, 20)
    empty.load_state_dict(q.state_dict())
    assert torch.equal(empty(x), q(x))


def test_whole_model_int8_paths_stay_close(make_tiny):
    model = make_tiny("llama")
    ids = tiny_batch(2, 12)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        m1 = quantize_model_w8a8(copy.deepcopy(model))
        n_lin = sum(len(arch.block_linears(b)) for b in arch.get_adapter(model).get_blocks(model))
        assert sum(isinstance(m, W8A8Linear) for m in m1.modules()) == n_lin
        m2 = wrap_norms_int8(copy.deepcopy(model), quantize_weight=True)
        n_norm = sum(arch.is_norm(m) for m in model.modules())
        assert sum(isinstance(m, Int8Norm) for m in m2.modules()) == n_norm
        wrap_norms_int8(m2)  # idempotent: no double wrapping
        assert sum(isinstance(m, Int8Norm) for m in m2.modules()) == n_norm
        for m in (m1, m2):
            out = m(input_ids=ids).logits
            assert 0 < (out - ref).abs().max() < 0.05 * ref.abs().max()
