"""The block-wise pipeline on tiny models of every family."""

import pytest
import torch

from normtweak import arch
from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.quant import QuantLinear
from normtweak.testing import tiny_batch
from normtweak.tweak.pipeline import NonFiniteActivationError, tweak_model
from normtweak.tweak.train import norm_parameters

QUANT = QuantSpec(bits=3, group_size=16)


def _calibration(n=4, seq=32):
    return torch.cat([tiny_batch(1, seq, seed=s) for s in range(n)])


def _norm_names(model):
    blocks = arch.get_adapter(model).get_blocks(model)
    ids = {id(p) for b in blocks for p in norm_parameters(b)}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_only_norm_parameters_change(make_tiny, family):
    ids = _calibration()
    original = make_tiny(family)
    tweaked = make_tiny(family)
    plain = make_tiny(family)
    # keep_better off: this checks what training moves, not whether it is kept
    tweak_model(tweaked, ids, QUANT, TweakSpec.preset("paper", lr=1e-2, iters=2), run=RunSpec(progress=False))
    tweak_model(plain, ids, QUANT, TweakSpec(loss="none"), run=RunSpec(progress=False))
    norms = _norm_names(tweaked)
    assert norms
    before = dict(original.named_parameters())
    changed = {n for n, p in tweaked.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= norms
    # quantized weights do not depend on the tweak: identical buffers with and without it
    sd_t, sd_p = tweaked.state_dict(), plain.state_dict()
    for n in sd_p:
        if n.endswith(("qweight", "scales", "zeros")):
            assert torch.equal(sd_t[n], sd_p[n]), n
    # every block linear is quantized, nothing else
    for block in arch.get_adapter(tweaked).get_blocks(tweaked):
        assert not arch.block_linears(block)
        assert any(isinstance(m, QuantLinear) for m in block.modules())


@pytest.mark.parametrize("fam", ["llama", "opt", "gpt2", "bert", "gemma"])
def test_loss_decreases_on_calibration(make_tiny, fam):
    result = tweak_model(make_tiny(fam), _calibration(8), QUANT, TweakSpec(lr=1e-3, scale=0.0, iters=4), run=RunSpec(progress=False))
    for block in result.blocks:
        assert block.loss_after < block.loss_before, (fam, block)


def test_plain_quantization_leaves_loss_unchanged(make_tiny):
    result = tweak_model(make_tiny("llama"), _calibration(), QUANT, TweakSpec(loss="none"), run=RunSpec(progress=False))
    for block in result.blocks:
        assert block.loss_after == pytest.approx(block.loss_before, rel=1e-6)


def test_learning_rate_schedule(make_tiny, monkeypatch):
    """The lr Adam actually steps with: block l of L=2 at 2e-4 * (1 + 3 l / 2) = 2e-4, 5e-4."""
    used = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):
            used.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    spec = TweakSpec.preset("paper", lr=2e-4, scale=3.0)
    result = tweak_model(make_tiny("llama"), _calibration(2), QUANT, spec, run=RunSpec(progress=False))
    assert len(result.blocks) == 2
    steps = len(used) // 2  # 2 calibration batches, 1 iteration per block
    assert steps == 2 and used == pytest.approx([2e-4] * steps + [5e-4] * steps, rel=1e-12)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_resume_after_interruption_gives_identical_model(make_tiny, tmp_path):
    ids = _calibration()
    spec = TweakSpec(lr=1e-2, iters=2)
    full = make_tiny("llama")
    tweak_model(full, ids, QUANT, spec, run=RunSpec(progress=False))

    def crash(index, block):  # Ctrl-C as block 1's turn begins: block 0 is checkpointed
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tweak_model(make_tiny("llama"), ids, QUANT, spec,
                    RunSpec(checkpoint_dir=tmp_path, progress=False), block_loader=crash)
    assert (tmp_path / "block_0000.safetensors").is_file()
    assert not (tmp_path / "block_0001.safetensors").exists()
    resumed = make_tiny("llama")
    result = tweak_model(resumed, ids, QUANT, spec, run=RunSpec(checkpoint_dir=tmp_path, resume=True, progress=False))
    assert [b.resumed for b in result.blocks] == [True, False]
    test_ids = tiny_batch(2, 16, seed=99)
    torch.testing.assert_close(_logits(resumed, test_ids), _logits(full, test_ids), atol=0, rtol=0)


def test_resume_refuses_other_run(make_tiny, tmp_path):
    ids = _calibration(2)
    tweak_model(make_tiny("llama"), ids, QUANT, TweakSpec(), run=RunSpec(checkpoint_dir=tmp_path, progress=False))
    with pytest.raises(ValueError, match="different run.*quant"):
        tweak_model(make_tiny("llama"), ids, QuantSpec(bits=4), TweakSpec(), run=RunSpec(checkpoint_dir=tmp_path, resume=True, progress=False))


def test_nan_stops_with_block_index_and_keeps_earlier_checkpoints(make_tiny, tmp_path):
    model = make_tiny("llama")
    block1 = arch.get_adapter(model).get_blocks(model)[1]
    with torch.no_grad():
        block1.post_attention_layernorm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.post_attention_layernorm\.weight "
                                         r"holds NaN/Inf"):  # refused before any work
        tweak_model(model, _calibration(2), QUANT, TweakSpec(), run=RunSpec(progress=False))
    with torch.no_grad():  # finite weights whose activations overflow: found as they appear
        block1.post_attention_layernorm.weight.fill_(3e38)
    with pytest.raises(NonFiniteActivationError, match="block 1"):
        tweak_model(model, _calibration(2), QUANT, TweakSpec(), run=RunSpec(checkpoint_dir=tmp_path, progress=False))
    assert (tmp_path / "block_0000.safetensors").is_file()
    assert not (tmp_path / "block_0001.safetensors").exists()


def test_bad_calibration_and_group_size(make_tiny):
    with pytest.raises(ValueError, match="token ids"):
        tweak_model(make_tiny("llama"), torch.randn(2, 8), QUANT, TweakSpec(), run=RunSpec(progress=False))
    with pytest.raises(ValueError, match="group_size 48 does not divide in_features 64"):
        tweak_model(make_tiny("llama"), _calibration(2), QuantSpec(group_size=48, group_fallback=False), TweakSpec(), run=RunSpec(progress=False))


def test_float_input_target_uses_the_float_stream(make_tiny):
    from normtweak.tweak.loss import distribution_loss

    ids = _calibration(2)
    reference = make_tiny("llama")  # independent float stream, block by block
    adapter = arch.get_adapter(reference)
    captured = arch.capture_block_inputs(reference, list(ids.split(1)))
    with torch.no_grad():
        float_x1 = [arch.run_block(adapter.get_blocks(reference)[0], h, captured.extra(0, h.shape))
                    for h in captured.hidden]
        float_y1 = [arch.run_block(adapter.get_blocks(reference)[1], h, captured.extra(1, h.shape))
                    for h in float_x1]
    model = make_tiny("llama")
    result = tweak_model(model, ids, QUANT, TweakSpec.preset("paper", loss="none",
                                                              target="float_input"), run=RunSpec(progress=False))
    quant_blocks = arch.get_adapter(model).get_blocks(model)
    with torch.no_grad():
        quant_x1 = [arch.run_block(quant_blocks[0], h, captured.extra(0, h.shape)) for h in captured.hidden]
        quant_y1 = [arch.run_block(quant_blocks[1], h, captured.extra(1, h.shape)) for h in quant_x1]
    expected = sum(float(distribution_loss(f, q)) for f, q in zip(float_y1, quant_y1)) / 2
    assert result.blocks[1].loss_before == pytest.approx(expected, rel=1e-5)
    paper = tweak_model(make_tiny("llama"), ids, QUANT, TweakSpec.preset("paper", loss="none"), run=RunSpec(progress=False))
    assert paper.blocks[0].loss_before == pytest.approx(result.blocks[0].loss_before, rel=1e-6)
    assert paper.blocks[1].loss_before != pytest.approx(result.blocks[1].loss_before, rel=1e-3)
    with pytest.raises(ValueError, match="target must be one of"):
        TweakSpec(target="teacher")


@pytest.mark.parametrize("quant_params", ["none", "clip"])
def test_scales_rounded_to_the_target_dtype_before_and_after_tuning(make_tiny, quant_params):
    """scale_dtype=float16 (GPTQ, GGUF): every scale the tweaked model holds is a float16
    number (checked by a round trip through float16); without it some are not."""
    from normtweak.quant import QuantLinear

    spec = QuantSpec(bits=4, group_size=16)
    tweak = TweakSpec(lr=1e-3, quant_params=quant_params)
    ids = tiny_batch(4, 16, seed=3)
    scales = {}
    for dtype in (None, torch.float16):
        model = make_tiny("llama")
        tweak_model(model, ids, spec, tweak, run=RunSpec(progress=False, scale_dtype=dtype))
        scales[dtype] = [m.scales for m in model.modules() if isinstance(m, QuantLinear)]
    assert all(torch.equal(s.half().float(), s.float()) for s in scales[torch.float16])
    assert not all(torch.equal(s.half().float(), s.float()) for s in scales[None])


def test_keep_better_restores_a_block_that_training_made_worse(make_tiny):
    """A step size far too large raises every block's calibration loss; keep_better puts
    each block back as it started, so the model equals plain RTN quantization exactly."""
    import warnings

    from normtweak.quant.model import quantize_model

    ids = tiny_batch(8, 16, seed=3)
    spec = QuantSpec(bits=3, group_size=16)
    wild = dict(lr=0.3, iters=2, batch_size=2, loss="mse", quant_params="clip_round",
                quant_lr=0.4)
    worse = tweak_model(make_tiny("llama"), ids, spec, TweakSpec(**wild, keep_better=False), run=RunSpec(progress=False))
    assert all(b.loss_after > b.loss_before and not b.kept_start for b in worse.blocks)
    model = make_tiny("llama")
    kept = tweak_model(model, ids, spec, TweakSpec(**wild), run=RunSpec(progress=False))
    assert all(b.kept_start and b.loss_after == b.loss_before for b in kept.blocks)
    plain = make_tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(plain, spec, run=RunSpec(progress=False))
    want = plain.state_dict()
    got = model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not TweakSpec.preset("paper").keep_better and TweakSpec().keep_better


def test_best_step_ends_each_block_at_its_lowest_minibatch_loss(make_tiny, monkeypatch):
    """best_step: every block's norms end as they were at the step with the lowest
    minibatch loss. A record kept outside the rule (every step's loss, taken from the loss
    function, and a copy of the norms before the step) names that step."""
    from normtweak.tweak import steps as steps_module

    records = []  # per block: [(loss recomputed here, norm params before the step)]
    real_train = steps_module.train_norms

    def recording_train(state, *args, **kwargs):
        steps = []
        norms = norm_parameters(state.block)
        loss_fn = state.loss_fn

        def loss_and_record(target, y):
            loss = loss_fn(target, y)
            steps.append((float(loss.detach()), [p.detach().clone() for p in norms]))
            return loss

        state.loss_fn = loss_and_record
        try:
            out = real_train(state, *args, **kwargs)
        finally:
            state.loss_fn = loss_fn
        records.append((steps, [p.detach().clone() for p in norms], out))
        return out

    monkeypatch.setattr(steps_module, "train_norms", recording_train)
    ids = tiny_batch(8, 16, seed=3)
    spec = dict(lr=5e-2, iters=3, batch_size=2, loss="mse", quant_params="clip_round",
                quant_lr=1e-2, keep_better=False)
    run = tweak_model(make_tiny("llama"), ids, QUANT, TweakSpec(**spec, best_step=True), run=RunSpec(progress=False))
    interior = 0
    for (steps, final, kept), block in zip(records, run.blocks):
        losses = [loss for loss, _ in steps]
        want = min(range(len(losses)), key=losses.__getitem__)
        assert kept == want == block.best_step
        assert all(torch.equal(a, b) for a, b in zip(final, steps[want][1]))
        interior += 0 < want < len(losses) - 1
    assert interior  # the rule chose a step that is neither the start nor the last one
    # without it the norms end at the last step's update (so the check above can fail)
    records.clear()
    tweak_model(make_tiny("llama"), ids, QUANT, TweakSpec(**spec), run=RunSpec(progress=False))
    steps, final, kept = records[0]
    assert kept is None and not all(torch.equal(a, b) for a, b in zip(final, steps[-1][1]))


@pytest.mark.parametrize("name", ["keep_better", "best_step"])
@pytest.mark.parametrize("value", ["false", 0, None])
def test_switches_must_be_booleans(name, value):
    with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
        TweakSpec(**{name: value})
    assert getattr(TweakSpec(**{name: True}), name) is True


def test_bf16_training_steps_train_and_keep_float32_everywhere_else(make_tiny):
    """train_dtype="bfloat16": the training forward runs under autocast; the parameters, the
    saved scales and the block outputs stay float32, and training still lowers the loss."""
    ids = _calibration(4)
    model = make_tiny("llama")
    result = tweak_model(model, ids, QUANT, TweakSpec(train_dtype="bfloat16", lr=1e-3),
                         RunSpec(progress=False))
    assert all(b.loss_after < b.loss_before for b in result.blocks)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(q.scales.dtype == torch.float32 for q in model.modules()
               if isinstance(q, QuantLinear))
    reference = make_tiny("llama")
    tweak_model(reference, ids, QUANT, TweakSpec(lr=1e-3), RunSpec(progress=False))
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                     reference.state_dict().values()))
    with pytest.raises(ValueError, match="train_dtype"):
        TweakSpec(train_dtype="float16")
