"""Quantization parameters tuned with the norms: the SignRound parameterization against a
float64 formula written from its definition, exact start at the base quantizer's codes,
and what joint tuning may change in a model."""

import pytest
import torch
from torch import nn

from normtweak import arch
from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.quant import QuantLinear
from normtweak.quant.gptq import GPTQ
from normtweak.quant.model import gptq_linear, rtn_linear
from normtweak.quant.tunable import make_tunable, to_quant_linear
from normtweak.testing import tiny_batch
from normtweak.tweak.pipeline import tweak_model
from normtweak.tweak.train import norm_parameters


def _layer(seed=0, out=24, inp=64):
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(inp, out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out, inp, generator=gen) * 0.1)
    return lin, gen


def signround_reference(w, alpha, beta, d, bits, gs, symmetric, full_range=False):
    """Float64, from the definition, one group at a time (loops, no shared helpers)."""
    w = w.double()
    out, inp = w.shape
    maxq = 2 ** bits - 1
    res = torch.zeros_like(w)
    size = inp if gs == -1 else gs
    for r in range(out):
        for g in range(inp // size):
            cols = slice(g * size, (g + 1) * size)
            x = w[r, cols]
            lo = min(float(x.min()), 0.0) * float(alpha[r, g].detach())
            hi = max(float(x.max()), 0.0) * float(beta[r, g].detach())
            if full_range:  # the extreme of larger magnitude, signed, on the lowest code
                m = float(x[torch.argmax(x.abs())]) * float(beta[r, g].detach())
                s, z = -m / 2 ** (bits - 1), 2 ** (bits - 1)
            elif symmetric:
                amax = float(x.abs().max()) * float(beta[r, g].detach())
                s, z = amax / (maxq / 2), 2 ** (bits - 1)
            else:
                s = (hi - lo) / maxq
                z = min(max(round(-lo / s), 0), maxq)
            q = torch.clamp(torch.round(x / s + d[r, cols].detach().double()) + z, 0, maxq)
            res[r, cols] = s * (q - z)
    return res


@pytest.mark.parametrize("bits,gs,symmetric,full_range", [
    (4, 16, False, False), (3, -1, False, False), (4, 32, True, False), (2, 16, False, False),
    (3, 16, True, True), (4, -1, True, True)])
def test_fake_weight_matches_float64_definition(bits, gs, symmetric, full_range):
    lin, gen = _layer(bits)
    spec = QuantSpec(bits=bits, group_size=gs, symmetric=symmetric, full_range=full_range)
    t = make_tunable(rtn_linear(lin, spec), lin.weight, rounding=True)
    with torch.no_grad():
        t.alpha.uniform_(0.6, 1.0, generator=gen)
        t.beta.uniform_(0.6, 1.0, generator=gen)
        t.d.uniform_(-0.5, 0.5, generator=gen)
    alpha = torch.ones_like(t.beta) if symmetric else t.alpha
    ref = signround_reference(lin.weight, alpha, t.beta, t.d, bits, gs, symmetric, full_range)
    got = t.fake_weight().double()
    close = torch.isclose(got, ref, rtol=1e-5, atol=1e-7)
    # Ties at .5 may round apart in float32 vs float64; symmetric grids put every group's
    # largest |w| exactly on a tie (max|w| / s = (2**b - 1) / 2).
    assert close.float().mean() > 0.99
    codes, scale, zero = t.finalize()
    q = QuantLinear.from_linear(lin, codes, scale, zero, spec)
    torch.testing.assert_close(q.dequantize(torch.float32), t.fake_weight().detach())


@pytest.mark.parametrize("method", ["rtn", "gptq"])
@pytest.mark.parametrize("full_range", [False, True])
def test_starts_exactly_at_the_base_codes(method, full_range):
    lin, gen = _layer(7, inp=96)
    spec = QuantSpec(bits=3, group_size=32, method=method, full_range=full_range)
    if method == "rtn":
        q = rtn_linear(lin, spec)
    else:
        g = GPTQ(lin)
        g.add_batch(torch.randn(256, 96, generator=gen) * torch.linspace(0.1, 3, 96))
        q = gptq_linear(g, spec)
    t = make_tunable(q, lin.weight, rounding=True)
    assert torch.equal(t.finalize()[0], q.codes())
    torch.testing.assert_close(t.fake_weight().detach(), q.dequantize(torch.float32),
                               rtol=1e-6, atol=0)
    back = to_quant_linear(t, q)
    assert torch.equal(back.qweight, q.qweight) and torch.equal(back.scales, q.scales)
    assert torch.equal(back.zeros, q.zeros) and torch.equal(back.bias, q.bias)


def test_gradients_reach_clipping_and_rounding():
    lin, gen = _layer(3)
    x = torch.randn(32, 64, generator=gen)
    spec = QuantSpec(bits=4, group_size=16, symmetric=False)
    t = make_tunable(rtn_linear(lin, spec), lin.weight, rounding=True)
    (t(x) - lin(x)).pow(2).mean().backward()
    assert t.alpha.grad.abs().sum() > 0 and t.beta.grad.abs().sum() > 0
    assert t.d.grad.abs().sum() > 0
    sym = make_tunable(rtn_linear(lin, QuantSpec(bits=4, group_size=16)), lin.weight, True)
    (sym(x) - lin(x)).pow(2).mean().backward()  # one range per group: beta alone scales it
    assert sym.alpha.grad is None and sym.beta.grad.abs().sum() > 0


def test_refuses_layouts_it_cannot_tune():
    lin, gen = _layer(4)
    with pytest.raises(ValueError, match="per-tensor"):
        make_tunable(rtn_linear(lin, QuantSpec(group_size=0)), lin.weight, rounding=False)
    g = GPTQ(lin)
    g.add_batch(torch.randn(128, 64, generator=gen) * torch.linspace(0.1, 3, 64))
    spec = QuantSpec(bits=4, group_size=16, method="gptq", act_order=True, static_groups=False)
    with pytest.raises(ValueError, match="static_groups"):
        make_tunable(gptq_linear(g, spec), lin.weight, rounding=False)
    with pytest.raises(ValueError, match="quant_params"):
        TweakSpec(quant_params="scales")
    with pytest.raises(ValueError, match="quant_lr"):
        TweakSpec(quant_lr=0.0)


def _calibration(n=8, seq=32):
    return torch.cat([tiny_batch(1, seq, seed=s) for s in range(n)])


@pytest.mark.parametrize("quant_params", ["clip", "clip_round"])
def test_joint_tuning_changes_only_norms_and_quantization(make_tiny, quant_params):
    ids = _calibration()
    quant = QuantSpec(bits=3, group_size=16)
    base, tuned = make_tiny("llama"), make_tiny("llama")
    original = make_tiny("llama")
    tweak_model(base, ids, quant, TweakSpec(loss="none"), run=RunSpec(progress=False))
    res = tweak_model(tuned, ids, quant, TweakSpec(lr=1e-3, iters=3, loss="mse",
                                                   quant_params=quant_params), run=RunSpec(progress=False))
    blocks = arch.get_adapter(tuned).get_blocks(tuned)
    norm_ids = {id(p) for b in blocks for p in norm_parameters(b)}
    before = dict(original.named_parameters())
    for name, p in tuned.named_parameters():
        assert id(p) in norm_ids or torch.equal(p, before[name]), name
    sd_b, sd_t = base.state_dict(), tuned.state_dict()
    assert set(sd_b) == set(sd_t)  # same format: QuantLinear buffers, nothing added
    changed = {n for n in sd_b if not torch.equal(sd_b[n], sd_t[n])}
    assert any(n.endswith("scales") for n in changed)
    assert any(n.endswith("qweight") for n in changed)  # new clipping moves codes too
    assert all(n.endswith(("qweight", "scales", "zeros")) or "norm" in n for n in changed)
    for b in res.blocks:
        assert b.loss_after < b.loss_before
    for block in blocks:
        assert all(isinstance(m, QuantLinear) for _, m in block.named_modules()
                   if "proj" in _.split(".")[-1])


def test_presets():
    paper = TweakSpec.preset("paper", lr=1e-5)
    # Algorithm 1 as written: one pass, one sample per step, distribution loss, norms only.
    assert (paper.iters, paper.batch_size, paper.loss, paper.quant_params) == (1, 1, "dist", "none")
    assert paper.lr == 1e-5 and paper.target == "quantized_input"
    assert TweakSpec.preset("joint").quant_params == "clip_round"
    with pytest.raises(ValueError, match="preset 'fast'.*joint.*paper"):
        TweakSpec.preset("fast")


@pytest.mark.parametrize("quant_params", ["none", "clip_round"])
def test_tweak_on_imported_checkpoint_changes_only_norms(make_tiny, tokenizer, tmp_path,
                                                         quant_params):
    """A checkpoint quantized elsewhere (here: saved GPTQ in compressed-tensors, then
    imported): norm-only tweaking keeps its codes and scales bit for bit."""
    import warnings

    from normtweak.io import save_quantized
    from normtweak.loading.foreign import imported_spec, load_quantized_linears
    from normtweak.quant.model import quantize_model

    ids = _calibration()
    spec = QuantSpec(bits=4, group_size=16, method="gptq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = make_tiny("llama")
        quantize_model(other, spec, calibration=ids, run=RunSpec(progress=False))
        save_quantized(other, tokenizer, tmp_path / "q", quant=spec)
    imported = load_quantized_linears(tmp_path / "q")
    quant = imported_spec(imported)
    assert (quant.bits, quant.group_size) == (4, 16)
    model, original = make_tiny("llama"), make_tiny("llama")
    tweak_model(model, ids, quant, TweakSpec(lr=1e-2, iters=2, quant_params=quant_params,
                                             keep_better=False), imported=imported, run=RunSpec(progress=False))
    saved = {n: q.state_dict() for n, q in load_quantized_linears(tmp_path / "q").items()}
    blocks = arch.get_adapter(model).get_blocks(model)
    norm_ids = {id(p) for b in blocks for p in norm_parameters(b)}
    before = dict(original.named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(id(dict(model.named_parameters())[n]) in norm_ids for n in changed)
    same = all(torch.equal(model.get_submodule(n).state_dict()[k], v)
               for n, sd in saved.items() for k, v in sd.items())
    assert same == (quant_params == "none")


def test_imported_spec_accepts_fallback_groups_and_refuses_mixed_precision():
    """Group sizes that differ only as group_fallback makes them read as one spec (the widest,
    fallback on); different bits, or groups the fallback would not give, are refused."""
    from types import SimpleNamespace

    from normtweak.loading.foreign import imported_spec

    def layer(bits, g, n_in):
        return SimpleNamespace(spec=QuantSpec(bits=bits, group_size=g), in_features=n_in)

    fallback = {"a.q_proj": layer(4, 64, 576), "a.down_proj": layer(4, 128, 1536)}
    spec = imported_spec(fallback)
    assert (spec.bits, spec.group_size, spec.group_fallback) == (4, 128, True)
    with pytest.raises(ValueError, match="mixes quantization settings"):
        imported_spec({"a.q_proj": layer(4, 32, 576), "a.down_proj": layer(4, 128, 1536)})
    with pytest.raises(ValueError, match="mixes quantization settings"):
        imported_spec({"a.q_proj": layer(3, 64, 576), "a.down_proj": layer(4, 128, 1536)})
