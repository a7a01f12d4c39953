"""Tweaking through normtweak.studies.norms modules (the Triton kernels, interpreted here) gives
the same model as tweaking through the model's own norm modules, and leaves plain
transformers modules behind."""

import pytest
import torch

from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.studies.norms import LayerNorm, RMSNorm
from normtweak.testing import tiny_batch
from normtweak.tweak.pipeline import tweak_model


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt2"])
def test_kernel_norms_give_the_same_tweak(make_tiny, family):
    ids = torch.cat([tiny_batch(1, 16, seed=s) for s in range(2)])
    spec, tweak = QuantSpec(bits=3, group_size=16), TweakSpec(lr=1e-2)
    ours, theirs = make_tiny(family), make_tiny(family)
    r1 = tweak_model(ours, ids, spec, tweak, run=RunSpec(progress=False, kernel_norms=True))
    r2 = tweak_model(theirs, ids, spec, tweak, run=RunSpec(progress=False, kernel_norms=False))
    assert not any(isinstance(m, (RMSNorm, LayerNorm)) for m in ours.modules())
    for a, b in zip(r1.blocks, r2.blocks):
        assert a.loss_after == pytest.approx(b.loss_after, rel=1e-3, abs=1e-6)
    sd1, sd2 = ours.state_dict(), theirs.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        if sd1[k].is_floating_point():
            torch.testing.assert_close(sd1[k], sd2[k], atol=1e-4, rtol=1e-3, msg=k)
