"""QuantLinear: forward equals the dequantized float Linear; state dict round-trips."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normtweak.config import QuantSpec
from normtweak.quant.gptq import GPTQ
from normtweak.quant.linear import QuantLinear
from normtweak.quant.rtn import rtn_quantize


def make(bits, group_size, bias=True, scale_dtype=None, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(96, 40, bias=bias)
    spec = QuantSpec(bits=bits, group_size=group_size)
    codes, scale, zero = rtn_quantize(lin.weight, spec)
    q = QuantLinear.from_linear(lin, codes, scale, zero, spec, scale_dtype=scale_dtype)
    return lin, q, codes, scale, zero, spec


def reference_weight(codes, scale, zero, group_size):
    """Independent per-element dequantization (float64 loops over groups)."""
    out, inf = codes.shape
    w = torch.empty(out, inf, dtype=torch.float64)
    for j in range(inf):
        g = j // group_size if group_size > 0 else 0
        w[:, j] = scale[:, g].double() * (codes[:, j].double() - zero[:, g].double())
    return w


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [-1, 0, 32])
def test_forward_equals_dequantized_linear(bits, group_size):
    lin, q, codes, scale, zero, _ = make(bits, group_size)
    assert torch.equal(q.codes(), codes)
    w_ref = reference_weight(codes, scale, zero, group_size)
    torch.testing.assert_close(q.dequantize().double(), w_ref, rtol=0, atol=1e-6)
    x = torch.randn(3, 7, 96)
    expect = F.linear(x.double(), w_ref, lin.bias.double()).float()
    torch.testing.assert_close(q(x), expect, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.to_linear()(x), expect, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_roundtrip_into_empty_layer(scale_dtype, bias):
    _, q, *_, spec = make(3, 32, bias=bias, scale_dtype=scale_dtype)
    sd = q.state_dict()
    assert set(sd) == {"qweight", "scales", "zeros", "g_idx"} | ({"bias"} if bias else set())
    assert sd["qweight"].dtype == torch.int32 and sd["scales"].dtype == scale_dtype
    empty = QuantLinear(96, 40, spec, bias=bias, scale_dtype=scale_dtype)
    x = torch.randn(5, 96)
    before = empty(x)  # fills the dequant cache, which loading must invalidate
    empty.load_state_dict(sd)
    assert not torch.equal(before, empty(x))
    assert torch.equal(empty(x), q(x))


def test_act_order_g_idx_roundtrip():
    torch.manual_seed(1)
    lin = nn.Linear(64, 16)
    x = torch.randn(256, 64) * torch.linspace(0.1, 3, 64)
    g = GPTQ(lin)
    g.add_batch(x)
    spec = QuantSpec(bits=4, group_size=16, method="gptq", act_order=True,
                     static_groups=False)  # the permuted-g_idx variant
    r = g.quantize(spec)
    q = QuantLinear.from_linear(lin, r.codes, r.scale, r.zero, spec, g_idx=r.g_idx)
    # Act-order puts the 16 columns with the largest Hessian diagonal in group 0.
    top = torch.topk((x * x).sum(0), 16).indices
    assert torch.all(q.g_idx[top] == 0) and int((q.g_idx == 0).sum()) == 16
    w_ref = torch.empty(16, 64, dtype=torch.float64)
    for j in range(64):
        gi = int(r.g_idx[j])
        w_ref[:, j] = r.scale[:, gi].double() * (r.codes[:, j].double() - r.zero[:, gi].double())
    torch.testing.assert_close(q.dequantize().double(), w_ref, rtol=0, atol=1e-6)
    empty = QuantLinear(64, 16, spec)
    empty.load_state_dict(q.state_dict())
    assert torch.equal(empty(x), q(x))


def test_in_place_edit_invalidates_cache_and_shape_errors():
    _, q, *_, spec = make(4, 32)
    x = torch.randn(2, 96)
    y = q(x)
    q.scales.mul_(2.0)
    torch.testing.assert_close(q(x) - q.bias, 2 * (y - q.bias), rtol=1e-5, atol=1e-5)
    lin = nn.Linear(96, 40)
    with pytest.raises(ValueError, match="codes shape"):
        QuantLinear.from_linear(lin, torch.zeros(40, 95), torch.ones(40, 3), torch.ones(40, 3), spec)
    with pytest.raises(ValueError, match="group_size 64 does not divide in_features 96"):
        QuantLinear(96, 40, QuantSpec(group_size=64, group_fallback=False))
    assert QuantLinear(96, 40, QuantSpec(group_size=64)).group_size == 32  # the fallback
    assert QuantLinear(96, 40, QuantSpec(group_size=64)).scales.shape == (40, 3)


def test_cache_is_optional_and_off_for_loaded_models(make_tiny, tokenizer, tmp_path):
    """A layer normtweak makes keeps its dequantized weight between forwards; one that
    load_quantized reads does not (the loaded model holds packed weights only), and both
    compute the same output."""
    import warnings

    from normtweak.config import QuantSpec, RunSpec
    from normtweak.io import load_quantized, save_quantized
    from normtweak.quant.model import quantize_model

    model = make_tiny("llama")
    quantize_model(model, QuantSpec(bits=4, group_size=32), run=RunSpec(progress=False))
    ids = torch.randint(2, 300, (1, 12))
    with torch.no_grad():
        y = model(input_ids=ids).logits
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert all(m._cache is not None for m in layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_quantized(model, tokenizer, tmp_path / "q", quant=QuantSpec(bits=4, group_size=32))
    loaded, _ = load_quantized(tmp_path / "q")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, y, rtol=0, atol=0)
    assert all(m._cache is None and not m.cache for m in loaded.modules()
               if isinstance(m, QuantLinear))
    cached, _ = load_quantized(tmp_path / "q", cache=True)
    with torch.no_grad():
        cached(input_ids=ids)
    assert all(m._cache is not None for m in cached.modules() if isinstance(m, QuantLinear))
