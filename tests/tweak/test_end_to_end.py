"""End-to-end tweaking: the KL against a float64 definition and a hand case; training moves
only norm parameters (the final norm included) and lowers the KL to the float model."""

import copy
import math
import warnings

import pytest
import torch

from normtweak import arch
from normtweak.config import QuantSpec, RunSpec
from normtweak.quant.model import quantize_model
from normtweak.testing import tiny_batch
from normtweak.tweak.end_to_end import (
    EndToEndSpec,
    logits_kl,
    model_norm_parameters,
    tweak_end_to_end,
)


def test_logits_kl_matches_the_definition_in_float64():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(3, 5, 11, generator=g) * 3, torch.randn(3, 5, 11, generator=g) * 3
    p = torch.softmax(t.double(), -1)
    q = torch.softmax(s.double(), -1)
    want = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(logits_kl(t, s).double(), want, rtol=1e-5, atol=1e-7)
    p2, q2 = torch.softmax(t.double() / 2, -1), torch.softmax(s.double() / 2, -1)
    torch.testing.assert_close(logits_kl(t, s, 2.0).double(),
                               (p2 * (p2.log() - q2.log())).sum(-1).mean(), rtol=1e-5, atol=1e-7)
    assert logits_kl(t, t).abs() < 1e-6


def test_logits_kl_hand_case():
    # p = [1/2, 1/2], q = [3/4, 1/4]: KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = logits_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]))
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_end_to_end_moves_only_norms_and_lowers_the_kl(make_tiny):
    teacher = make_tiny("llama")
    model = copy.deepcopy(teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(model, QuantSpec(bits=3, group_size=16), run=RunSpec(progress=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    norm_ids = {id(p) for p in model_norm_parameters(model)}
    norm_keys = {k for k, p in model.named_parameters() if id(p) in norm_ids}
    final = arch.get_adapter(model).get_final_norm(model)
    assert any(p is final.weight for p in model_norm_parameters(model))
    ids = tiny_batch(4, 16, seed=1)
    res = tweak_end_to_end(model, teacher, ids, EndToEndSpec(lr=1e-2, iters=4, batch_size=2),
                           progress=False)
    assert res.steps == 8 and res.kl_after < res.kl_before
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= norm_keys
    assert "model.norm.weight" in changed
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.0}, "lr"), ({"iters": 0}, "iters"), ({"batch_size": 0}, "batch_size"),
    ({"temperature": 0.0}, "temperature")])
def test_end_to_end_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EndToEndSpec(**kwargs)


def test_tweak_model_runs_end_to_end_after_the_block_pass(make_tiny):
    """TweakSpec(end_to_end_iters=...) in the block loop: the final norm changes (the block
    pass alone never touches it) and the KL to the float model goes down."""
    from normtweak.config import TweakSpec
    from normtweak.tweak.pipeline import tweak_model

    spec = QuantSpec(bits=3, group_size=16)
    ids = tiny_batch(4, 16, seed=2)
    plain = make_tiny("llama")
    tweak_model(plain, ids, spec, TweakSpec.preset("paper", lr=1e-3), run=RunSpec(progress=False))
    model = make_tiny("llama")
    res = tweak_model(model, ids, spec, TweakSpec.preset("paper", lr=1e-3, end_to_end_iters=2,
                                                         end_to_end_lr=1e-2), run=RunSpec(progress=False))
    e2e = res.as_dict()["end_to_end"]
    assert e2e["steps"] == 8 and e2e["kl_after"] < e2e["kl_before"]
    assert torch.equal(plain.model.norm.weight, make_tiny("llama").model.norm.weight)
    assert not torch.equal(model.model.norm.weight, plain.model.norm.weight)
    with pytest.raises(ValueError, match="end_to_end_iters"):
        TweakSpec(end_to_end_iters=-1)
    with pytest.raises(ValueError, match="end_to_end_lr"):
        TweakSpec(end_to_end_lr=0.0)
