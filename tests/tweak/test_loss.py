"""Tweak losses against hand-computed cases and a float64 formula."""

import pytest
import torch

from normtweak.tweak.loss import (
    channel_stats,
    distribution_loss,
    distribution_mse_loss,
    get_loss,
    output_mse_loss,
    token_relative_mse_loss,
)


def test_distribution_loss_hand_case():
    # one sample, 2 tokens, 2 channels
    y_f = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])  # means 2, 2   vars 1, 4
    y_q = torch.tensor([[[0.0, 1.0], [2.0, 1.0]]])  # means 1, 1   vars 1, 0
    # channel 0: |2-1| + |1-1| = 1 ; channel 1: |2-1| + |4-0| = 5 ; mean over C: 3
    assert distribution_loss(y_f, y_q).item() == pytest.approx(3.0)
    # stds: f (1, 2), q (1, 0): mse_mean = ((1)^2 + (1)^2)/2 = 1 ; mse_std = (0 + 4)/2 = 2
    assert distribution_mse_loss(y_f, y_q).item() == pytest.approx(3.0)
    # output mse: diffs 1,-1,1,3 -> (1+1+1+9)/4 = 3
    assert output_mse_loss(y_f, y_q).item() == pytest.approx(3.0)


def test_distribution_loss_matches_float64_formula():
    gen = torch.Generator().manual_seed(0)
    y_f = torch.randn(3, 17, 8, generator=gen)
    y_q = y_f + 0.3 * torch.randn(3, 17, 8, generator=gen) + 0.1
    a, b = y_f.double(), y_q.double()
    ref = 0.0
    for s in range(3):
        for c in range(8):
            mf, mq = a[s, :, c].mean(), b[s, :, c].mean()
            vf = ((a[s, :, c] - mf) ** 2).mean()
            vq = ((b[s, :, c] - mq) ** 2).mean()
            ref += (abs(mf - mq) + abs(vf - vq)).item()
    ref /= 3 * 8
    assert distribution_loss(y_f, y_q).item() == pytest.approx(ref, rel=1e-5)


def test_channel_stats_shapes_and_bf16_in_float32():
    y = torch.randn(2, 5, 4).bfloat16()
    mean, var = channel_stats(y)
    assert mean.shape == var.shape == (2, 4) and mean.dtype == torch.float32


def test_losses_are_zero_on_equal_outputs_and_differentiable():
    y = torch.randn(2, 6, 4)
    for name in ("dist", "dist_mse", "mse", "rel_mse"):
        q = y.clone().requires_grad_(True)
        loss = get_loss(name)(y, q + 0.5)
        loss.backward()
        assert q.grad is not None and loss.item() > 0
        assert get_loss(name)(y, y.clone()).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown tweak loss"):
        get_loss("kl")


def test_dist_mse_has_a_finite_gradient_at_zero_variance():
    y_f = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]], dtype=torch.float64)
    y_q = torch.tensor([[[2.0, 1.0], [2.0, 1.0]]], dtype=torch.float64, requires_grad=True)  # var 0
    loss = distribution_mse_loss(y_f, y_q)
    loss.backward()
    assert torch.isfinite(y_q.grad).all()
    # hand value (stds 1, 2 vs 0, 0; means 2, 2 vs 2, 1): (0 + 1) / 2 + (1 + 4) / 2
    assert loss.item() == pytest.approx(3.0, rel=1e-5)


def test_token_relative_mse_hand_case():
    # one sample, 2 tokens, 2 channels: token norms^2 25 and 1; errors^2 (1+4)=5 and 1
    y_f = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    y_q = torch.tensor([[[2.0, 2.0], [0.0, 0.0]]])
    # (5/25 + 1/1) / 2 = 0.6
    assert token_relative_mse_loss(y_f, y_q).item() == pytest.approx(0.6)
    # a token whose float output is zero counts its absolute error: (0 + 2) / 2 with y_f = 0
    zero = torch.zeros(1, 2, 2)
    assert token_relative_mse_loss(zero, torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])).item() \
        == pytest.approx(1.0)


def test_token_relative_mse_matches_float64_formula_and_ignores_token_scale():
    gen = torch.Generator().manual_seed(1)
    y_f = torch.randn(3, 11, 8, generator=gen)
    y_f[:, 0] *= 1000.0  # a massive-activation token
    y_q = y_f * (1 + 0.05 * torch.randn(3, 11, 8, generator=gen))
    a, b = y_f.double(), y_q.double()
    ref = 0.0
    for s in range(3):
        for t in range(11):
            ref += (((a[s, t] - b[s, t]) ** 2).sum() / (a[s, t] ** 2).sum()).item()
    ref /= 3 * 11
    assert token_relative_mse_loss(y_f, y_q).item() == pytest.approx(ref, rel=1e-5)
    # scaling one token's float and quantized outputs together leaves the loss unchanged,
    # while plain MSE follows that token
    y_f2, y_q2 = y_f.clone(), y_q.clone()
    y_f2[:, 0] *= 10.0
    y_q2[:, 0] *= 10.0
    assert token_relative_mse_loss(y_f2, y_q2).item() == pytest.approx(ref, rel=1e-5)
    assert output_mse_loss(y_f2, y_q2).item() > 50 * output_mse_loss(y_f, y_q).item()
