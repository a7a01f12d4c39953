"""RunSpec.compile: the training steps through torch.compile give the same tweak as eager."""

import pytest
import torch

from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.testing import tiny_batch
from normtweak.tweak.pipeline import tweak_model


@pytest.mark.slow  # about 50 s: inductor compiles the block's forward and backward
def test_compiled_training_gives_the_same_tweak(make_tiny):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ids = torch.cat([tiny_batch(2, 16, seed=s) for s in range(3)])  # 6 samples: a short batch
    spec = QuantSpec(bits=3, group_size=16, symmetric=True)
    tweak = TweakSpec(iters=2, batch_size=4, quant_params="clip", lr=1e-2)
    eager, compiled = make_tiny("llama"), make_tiny("llama")
    r1 = tweak_model(eager, ids, spec, tweak, run=RunSpec(progress=False))
    r2 = tweak_model(compiled, ids, spec, tweak, run=RunSpec(progress=False, compile=True))
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    for a, b in zip(r1.blocks, r2.blocks):
        assert a.loss_before == pytest.approx(b.loss_before, rel=1e-5)
        assert b.loss_after < b.loss_before  # it trained
        assert a.loss_after == pytest.approx(b.loss_after, rel=1e-3, abs=1e-7)
    sd1, sd2 = eager.state_dict(), compiled.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        if sd1[k].is_floating_point():
            torch.testing.assert_close(sd1[k], sd2[k], atol=1e-4, rtol=1e-3, msg=k)
        else:
            assert torch.equal(sd1[k], sd2[k]), k


def test_compile_must_be_a_bool():
    with pytest.raises(TypeError, match="compile"):
        RunSpec(compile="yes")
