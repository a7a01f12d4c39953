"""Our norm modules inside real (tiny) transformers models, swap_norms, torch.compile."""

import pytest
import torch
from torch import nn

from normtweak import arch
from normtweak.studies.norms import (
    LayerNorm,
    RMSNorm,
    from_normtweak_norms,
    swap_norms,
    to_normtweak_norms,
)
from normtweak.testing import FAMILIES, tiny_batch, tiny_model


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_our_modules_reproduce_every_family(family):
    model = tiny_model(family).eval()
    ids = tiny_batch()
    before = logits(model, ids)
    offset = arch.get_adapter(model).norm_offset
    originals = to_normtweak_norms(model, offset)
    assert originals, "the model has norms"
    ours = [m for m in model.modules() if isinstance(m, (RMSNorm, LayerNorm))]
    assert len(ours) == len(originals)
    torch.testing.assert_close(logits(model, ids), before, atol=2e-5, rtol=1e-5)
    # Training our module trains the model's own Parameter; restore puts plain modules back.
    with torch.no_grad():
        ours[0].weight.mul_(1.5)
    from_normtweak_norms(model, originals)
    assert not any(isinstance(m, (RMSNorm, LayerNorm)) for m in model.modules())
    first = next(iter(originals.values()))
    assert first.weight is ours[0].weight
    assert not torch.allclose(logits(model, ids), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_offset_is_detected_without_the_adapter(family):
    """to_normtweak_norms(model) alone finds Gemma's (1 + w) by checking each module."""
    model = tiny_model(family).eval()
    ids = tiny_batch()
    before = logits(model, ids)
    originals = to_normtweak_norms(model)
    want = arch.get_adapter(model).norm_offset
    assert [m.offset for m in model.modules() if isinstance(m, RMSNorm)] == [want] * sum(
        isinstance(m, RMSNorm) for m in model.modules())
    torch.testing.assert_close(logits(model, ids), before, atol=2e-5, rtol=1e-5)
    from_normtweak_norms(model, originals)
    assert all(model.get_submodule(n) is m for n, m in originals.items())


class HalfRMSNorm(nn.Module):
    """A norm no normtweak module reproduces (y = x / 2): must be left alone."""

    def __init__(self):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(8)), 1e-6

    def forward(self, x):
        return x / 2 * self.weight


def test_an_unknown_norm_formula_is_kept_with_a_warning():
    holder = nn.Sequential(nn.Linear(8, 8))
    holder.add_module("post_RMSNorm", HalfRMSNorm())
    with pytest.warns(UserWarning, match="kept post_RMSNorm"):
        assert to_normtweak_norms(holder) == {}
    assert isinstance(holder.post_RMSNorm, HalfRMSNorm)


def test_bfloat16_llama_norms_are_recognised():
    model = tiny_model("llama").to(torch.bfloat16).eval()
    names = to_normtweak_norms(model)
    assert len(names) == 5 and all(isinstance(model.get_submodule(n), RMSNorm) for n in names)
    assert all(model.get_submodule(n).offset == 0.0 for n in names)


def _centered_net(hidden=16, seed=0):
    """Linear (outputs sum to zero over features) -> LayerNorm (nonzero bias) -> Linear."""
    g = torch.Generator().manual_seed(seed)
    first = nn.Linear(8, hidden, bias=False)
    with torch.no_grad():
        w = torch.randn(hidden, 8, generator=g)
        first.weight.copy_(w - w.mean(0, keepdim=True))  # each input column sums to 0 over outputs
    ln = nn.LayerNorm(hidden)
    with torch.no_grad():
        ln.weight.copy_(torch.rand(hidden, generator=g) + 0.5)
        ln.bias.copy_(torch.randn(hidden, generator=g) * 0.3)
    return first, ln, nn.Linear(hidden, 4)


class Block(nn.Module):
    def __init__(self, first, ln, fc1):
        super().__init__()
        self.first, self.final_layer_norm, self.fc1 = first, ln, fc1

    def forward(self, x):
        return self.fc1(self.final_layer_norm(self.first(x)))


class Net(nn.Module):
    """Looks like an OPT pre-LN block to swap_norms: final_layer_norm feeds only fc1."""

    def __init__(self, centered=True):
        super().__init__()
        self.config = type("C", (), {"model_type": "opt", "do_layer_norm_before": True})()
        first, ln, fc1 = _centered_net()
        if not centered:
            with torch.no_grad():
                first.weight.add_(0.5)
        self.block = Block(first, ln, fc1)

    def forward(self, x):
        return self.block(x)


def test_swap_keeps_outputs_when_the_mean_is_zero_and_folds_the_bias():
    net, x = Net(), torch.randn(5, 8)
    assert torch.allclose(net.block.first(x).mean(-1), torch.zeros(5), atol=1e-6)
    before = net(x)
    report = swap_norms(net, to="rms")
    assert report.swapped == ["block.final_layer_norm"] and report.folded == ["block.final_layer_norm"]
    assert isinstance(net.block.final_layer_norm, RMSNorm)
    assert sum(p.numel() for p in net.block.final_layer_norm.parameters()) == 16  # no bias
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)


def test_swap_changes_outputs_when_the_mean_is_not_zero():
    net, x = Net(centered=False), torch.randn(5, 8)
    before = net(x)
    swap_norms(net, to="rms")
    assert (net(x) - before).abs().max() > 1e-2


def test_swap_on_a_post_ln_encoder_reports_dropped_biases_and_swaps_back():
    model = tiny_model("bert").eval()
    n_ln = sum(isinstance(m, nn.LayerNorm) for m in model.modules())
    report = swap_norms(model, to="rms")
    assert len(report.swapped) == n_ln and len(report.dropped_bias) == n_ln and not report.folded
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    logits(model, tiny_batch())  # still runs
    back = swap_norms(model, to="layer")
    assert len(back.swapped) == n_ln
    assert all(m.bias is not None and not m.bias.any() for m in model.modules() if isinstance(m, LayerNorm))
    with pytest.raises(ValueError, match="'rms' or 'layer'"):
        swap_norms(model, to="batch")


def test_rms_to_layer_keeps_the_gemma_offset():
    norm = RMSNorm(6, offset=1.0)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, 6))
    holder = nn.Sequential(norm)
    swap_norms(holder, to="layer")
    torch.testing.assert_close(holder[0].weight, torch.linspace(0.5, 1.5, 6))


def test_gemma_rms_norms_go_to_layer_norm_with_one_plus_w():
    """A transformers Gemma RMSNorm (no offset attribute) is probed: LayerNorm weight 1 + w."""
    model = tiny_model("gemma").eval()
    names = [n for n, m in model.named_modules() if type(m).__name__.endswith("RMSNorm")]
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    report = swap_norms(model, to="layer")
    assert sorted(report.swapped) == sorted(names) and not report.skipped
    for n in names:
        torch.testing.assert_close(model.get_submodule(n).weight.detach(), 1 + weights[n])
    holder = nn.Sequential(nn.Linear(8, 8))
    holder.add_module("odd", HalfRMSNorm())
    report = swap_norms(holder, to="layer")
    assert report.skipped == ["odd"] and isinstance(holder.odd, HalfRMSNorm)
    assert "skipped (unknown formula): odd" in str(report)


def test_torch_compile_sees_the_custom_op():
    norm = RMSNorm(32)
    x = torch.randn(4, 32, requires_grad=True)
    compiled = torch.compile(norm, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, norm(x))
    assert norm.weight.grad is not None and x.grad is not None


def test_torch_compile_inductor_on_cpu():
    """The default backend (Inductor's C++ code on the CPU) compiles around our opaque ops."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 32), RMSNorm(32, offset=1.0), LayerNorm(32))
    x = torch.randn(4, 32, requires_grad=True)
    compiled = torch.compile(net, fullgraph=True)
    y = compiled(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *net.parameters()])
    want = torch.autograd.grad(net(x).square().sum(), [x, *net.parameters()])
    torch.testing.assert_close(y, net(x))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
